package ipallowlist

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/tokenstore"
)

// tokensCommand is `caddy ip-allowlist tokens`: a token store's tokens,
// changed through a running Caddy's admin routes (the default), in a store
// file no Caddy holds, or in Redis, the way every node expects (see
// RedisSource).
func tokensCommand() *cobra.Command { return tokensCommandLogging(nil) }

// tokensCommandLogging is tokensCommand whose --store writes its audit
// lines to logger (nil: Caddy's default logger, on standard error).
func tokensCommandLogging(logger *zap.Logger) *cobra.Command {
	f := tokensFlags{logger: logger}
	cmd := &cobra.Command{
		Use:   "tokens",
		Short: "Lists and changes the tokens of a token store",
		Long: `
Lists and changes the tokens of an ip_allowlist token store, one of:

  --admin <address>   a running Caddy, through its admin routes
                      (/ip-allowlist/tokens...); the default target. The
                      address is found as caddy reload finds it: --admin,
                      else the admin listen address of --config, else
                      CADDY_ADMIN, else localhost:2019. unix//<path> is a
                      unix socket. --store-name picks one of several stores.
  --store <path>      a store file no Caddy holds (store file): the same
                      checks and writes as the routes, without a Caddy. A
                      file a running Caddy holds is refused: use --admin.
  --redis <host:port> a Redis store (store redis, or the redis block).

Every change prints what it changed, one line each ("cust-1: allow +
192.0.2.7"); a refused change prints the reason, naming the entry, and
exits non-zero. Only digests are written: put reads the token from a file
or standard input, never from the command line, and stores its SHA-256.
No command prints a token.

  caddy ip-allowlist tokens put cust-1 --allow 203.0.113.0/24 --token-file token.txt
  caddy ip-allowlist tokens allow cust-1 192.0.2.7 --ttl 168h --note "travel"
  caddy ip-allowlist tokens remove cust-1 192.0.2.7
  caddy ip-allowlist tokens suspend cust-1
  caddy ip-allowlist tokens delete cust-1        # revokes: refused everywhere
  caddy ip-allowlist tokens list
  caddy ip-allowlist tokens export -o backup.json
  caddy ip-allowlist tokens --store /var/lib/caddy/tokens.db compact

With --redis, put, allow, delete, list, import and export work as before
the token store (list prints a tokens_file); every change is one
transaction that sets the entry and the store's digest index, bumps
<prefix>version and publishes the label on <prefix>changes. The Redis
password, if any, is read from the environment variable --password-env
names (default REDIS_PASSWORD), never from the command line.
`,
	}
	p := cmd.PersistentFlags()
	p.StringVar(&f.admin, "admin", "", "admin address of the running Caddy (default: --config's, else CADDY_ADMIN, else "+caddy.DefaultAdminListen+"); unix//<path> for a socket")
	p.StringVar(&f.config, "config", "", "config file to read the admin address from, as caddy reload")
	p.StringVar(&f.adapter, "adapter", "", "adapter of --config")
	p.StringVar(&f.store, "store", "", "store file to change directly, when no Caddy holds it")
	p.StringVar(&f.storeName, "store-name", "", "with --admin, the store to change where a config has several (?store=)")
	p.StringVar(&f.src.Address, "redis", "", "host:port of a Redis store to change, such as "+DefaultRedisAddress)
	p.StringVar(&f.src.Username, "username", "", "Redis ACL user")
	p.StringVar(&f.passwordEnv, "password-env", "REDIS_PASSWORD", "environment variable holding the Redis password")
	p.IntVar(&f.src.DB, "db", 0, "Redis database number")
	p.StringVar(&f.src.KeyPrefix, "prefix", DefaultKeyPrefix, "key prefix, as the redis source's key_prefix")
	p.BoolVar(&f.tls, "tls", false, "connect to Redis with TLS")
	p.StringVar(&f.tlsCA, "tls-ca", "", "PEM file of CAs to verify the Redis server with (implies --tls)")
	p.StringVar(&f.tlsServerName, "tls-server-name", "", "name to verify the Redis server's certificate for (implies --tls)")

	put := &cobra.Command{
		Use:   "put <label> --allow <range>[,<range>...] [--deny <range>...] [--token-file <file> | --token-sha256 <hex> | --keep-token]",
		Short: "Adds a token, or replaces a token's entry",
		Long: `
Sets the entry of <label>: creates it, or replaces it whole (its allow and
deny lists, and its note, owner, mode and suspended; the expiries and notes
of its allow entries are dropped). A revoked label is listed again.

The token is read from --token-file (a file, or - for standard input), or
from standard input when neither it nor --token-sha256 is given: from a
pipe, everything less one trailing newline; at a terminal, asked for
without echo. Only its SHA-256 is sent and stored. --token-sha256 gives the
digest instead. For a label already in the store, --keep-token keeps its
token; giving the same token again does too. A different token for a label
already in the store is refused: the old token would become unlisted.

Several ranges: --allow 192.0.2.1,192.0.2.2 or --allow 192.0.2.1 --allow 192.0.2.2.

--note, --owner, --mode and --suspended are not taken with --redis.
`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 1:
				return nil
			case len(args) == 0:
				return errors.New("put takes a label")
			}
			return fmt.Errorf("put takes one label, got %d arguments; give several ranges as --allow a,b or repeat --allow (a range after a space is not taken, so that none lands in the wrong list)", len(args))
		},
	}
	var allow, deny []string
	var digest, tokenFile, note, owner, mode string
	var keep, suspended bool
	put.Flags().StringSliceVar(&allow, "allow", nil, "where the token may be used from (repeat, or separate with commas)")
	put.Flags().StringSliceVar(&deny, "deny", nil, "exceptions inside allow")
	put.Flags().StringVar(&digest, "token-sha256", "", "the token's SHA-256 (64 hex digits, sha256: optional) instead of reading the token")
	put.Flags().StringVar(&tokenFile, "token-file", "", "file to read the token from (- for standard input)")
	put.Flags().BoolVar(&keep, "keep-token", false, "keep the token of the existing entry")
	put.Flags().StringVar(&note, "note", "", "a note on the token, for the people who keep the list")
	put.Flags().StringVar(&owner, "owner", "", "who the token belongs to (a customer or account id)")
	put.Flags().StringVar(&mode, "mode", "", "the token's own mode: report (log refusals, let them through) or enforce; default: the handler's")
	put.Flags().BoolVar(&suspended, "suspended", false, "create the token suspended (refused everywhere until resumed)")
	// readDigest is the hex digest of the token put names, or "" to keep
	// the entry's.
	readDigest := func(cmd *cobra.Command) (string, error) {
		given := 0
		for _, name := range []string{"token-sha256", "token-file", "keep-token"} {
			if cmd.Flags().Changed(name) {
				given++
			}
		}
		switch {
		case given > 1:
			return "", errors.New("give one of --token-file, --token-sha256 and --keep-token")
		case keep:
			return "", nil
		case tokenFile != "" && tokenFile != "-":
			in, err := os.Open(tokenFile)
			if err != nil {
				return "", err
			}
			defer in.Close()
			return tokenDigest("", in)
		}
		return tokenDigest(digest, cmd.InOrStdin())
	}
	put.RunE = func(cmd *cobra.Command, args []string) error {
		target, err := f.target(cmd)
		if err != nil {
			return err
		}
		label := args[0]
		if target != targetRedis {
			// Read before the store is opened: the file stays free while
			// the token is typed.
			d, err := readDigest(cmd)
			if err != nil {
				return fmt.Errorf("token %q: %w", label, err)
			}
			return f.runTarget(cmd, target, func(t tokensTarget) error {
				return changeEntry(t, cmd.OutOrStdout(), label, func(before *entryOut, cond tokenstore.Cond) (*entryOut, error) {
					tp := TokenPolicy{TokenSHA256: d, Allow: allow, Deny: deny, Note: note, Owner: owner, Mode: mode, Suspended: suspended}
					if d == "" {
						if before == nil {
							return nil, fmt.Errorf("token %q is not in %s; --keep-token needs an existing entry", label, t.where())
						}
						tp.TokenSHA256 = before.TokenSHA256
					}
					cond.IfAbsent = before == nil
					after, err := t.put(label, tp, cond)
					return &after, err
				})
			})
		}
		if err := refuseFlags(cmd, target, "note", "owner", "mode", "suspended"); err != nil {
			return err
		}
		return f.run(cmd, func(ctx context.Context, s *tokenStore) error {
			tp := TokenPolicy{Allow: allow, Deny: deny}
			if !keep {
				d, err := readDigest(cmd)
				if err != nil {
					return err
				}
				tp.TokenSHA256 = d
			}
			var what string
			err := s.update(ctx, label, func(cur *TokenPolicy) (*TokenPolicy, error) {
				what = "added"
				if cur != nil {
					what = "ranges replaced"
					if cur.Revoked {
						what = "restored (no longer revoked)"
					}
				}
				if keep {
					if cur == nil {
						return nil, fmt.Errorf("token %q is not in the store; --keep-token needs an existing entry", label)
					}
					tp.Token, tp.TokenSHA256 = cur.Token, cur.TokenSHA256
				}
				return &tp, nil
			})
			if err == nil {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s; allow %s%s\n", label, what, strings.Join(allow, ","), denyNote(deny))
			}
			return err
		})
	}

	allowCmd := &cobra.Command{
		Use:   "allow <label> <entry>... [--ttl <duration> | --expires <time>] [--note <text>]",
		Short: "Adds entries to a token's allow list (Add More)",
		Long: `
Adds addresses, ranges or ip_set names to the allow list of <label>. An
entry already present, however written (127.0.0.9 is 127.0.0.9/32), is
updated: --note replaces its note; --ttl or --expires moves a temporary
entry's expiry, and without either it becomes permanent; a permanent entry
stays permanent. An entry given twice is refused.

--ttl (168h, 7d) or --expires (RFC 3339, in the future, at most 100 years
ahead) makes the entries temporary: past that time they stop matching, and
the token stays listed. --note is kept beside each entry added. These are
not taken with --redis.
`,
		Args: cobra.MinimumNArgs(2),
	}
	var ttl, expires, entryNote string
	allowCmd.Flags().StringVar(&ttl, "ttl", "", "how long the entries added are allowed, such as 168h or 7d")
	allowCmd.Flags().StringVar(&expires, "expires", "", "when the entries added stop being allowed (RFC 3339)")
	allowCmd.Flags().StringVar(&entryNote, "note", "", "a note kept with each entry added")
	allowCmd.RunE = func(cmd *cobra.Command, args []string) error {
		target, err := f.target(cmd)
		if err != nil {
			return err
		}
		label := args[0]
		if err := duplicateError("entries", args[1:]); err != nil {
			return &ConfigError{Token: label, Err: err}
		}
		if target != targetRedis {
			body := allowBody{Entries: args[1:], TTL: ttl, Expires: expires, Note: entryNote}
			// Checked before the store is opened; the store checks it
			// again, at its own time.
			if _, err := body.expiry(time.Now()); err != nil {
				return fmt.Errorf("token %q: %w", label, err)
			}
			return f.runTarget(cmd, target, func(t tokensTarget) error {
				return changeEntry(t, cmd.OutOrStdout(), label, func(_ *entryOut, cond tokenstore.Cond) (*entryOut, error) {
					after, err := t.allow(label, body, cond)
					return &after, err
				})
			})
		}
		if err := refuseFlags(cmd, target, "ttl", "expires", "note"); err != nil {
			return err
		}
		return f.run(cmd, func(ctx context.Context, s *tokenStore) error {
			var added []string
			err := s.update(ctx, label, func(cur *TokenPolicy) (*TokenPolicy, error) {
				if cur == nil {
					return nil, fmt.Errorf("token %q is not in the store; add it with put", label)
				}
				added = added[:0]
				for _, r := range args[1:] {
					if findEntry(cur.Allow, r) < 0 {
						cur.Allow = append(cur.Allow, r)
						added = append(added, r)
					}
				}
				return cur, nil
			})
			if err == nil {
				if len(added) == 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: unchanged; every range given was allowed already\n", label)
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: allowed %s\n", label, strings.Join(added, ","))
				}
			}
			return err
		})
	}

	var unrestrict bool
	del := &cobra.Command{
		Use:   "delete [--unrestrict] <label>...",
		Short: "Revokes tokens (refused everywhere), or with --unrestrict removes them",
		Long: `
Revokes each token: its entry is kept, marked revoked, and every node
refuses the token on every request (reason token_revoked), whatever the
unlisted policy. Its token stays bound to the label. put lists it again.

With --unrestrict, the entry and its digest index entry are removed
instead: the token becomes UNLISTED, usable from wherever the nodes'
unlisted_tokens allow (by default from anywhere). Use it only for a token
that should be treated as unknown.
`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			target, err := f.target(cmd)
			if err != nil {
				return err
			}
			if target != targetRedis {
				return f.runTarget(cmd, target, func(t tokensTarget) error {
					for _, label := range args {
						err := changeEntry(t, cmd.OutOrStdout(), label, func(before *entryOut, cond tokenstore.Cond) (*entryOut, error) {
							if err := t.revoke(label, unrestrict, cond); err != nil || unrestrict {
								return nil, err
							}
							if before == nil {
								return nil, nil
							}
							after := *before
							after.TokenPolicy = cloneEntry(before.TokenPolicy)
							after.Revoked = true
							return &after, nil
						})
						if err != nil {
							return err
						}
					}
					return nil
				})
			}
			return f.run(cmd, func(ctx context.Context, s *tokenStore) error {
				for _, label := range args {
					var err error
					if unrestrict {
						err = s.unrestrict(ctx, label)
					} else {
						err = s.update(ctx, label, func(cur *TokenPolicy) (*TokenPolicy, error) {
							if cur == nil {
								return nil, fmt.Errorf("token %q is not in the store", label)
							}
							return &TokenPolicy{TokenSHA256: entryDigest(cur), Revoked: true}, nil
						})
					}
					if err != nil {
						return err
					}
					if unrestrict {
						fmt.Fprintf(cmd.OutOrStdout(), "%s: removed; its token is now unlisted\n", label)
					} else {
						fmt.Fprintf(cmd.OutOrStdout(), "%s: revoked; its token is refused on every node\n", label)
					}
				}
				return nil
			})
		},
	}
	del.Flags().BoolVar(&unrestrict, "unrestrict", false, "remove the entry instead of revoking: the token becomes unlisted, usable wherever unlisted_tokens allows (by default anywhere)")

	removeCmd := &cobra.Command{
		Use:   "remove <label> <entry>",
		Short: "Removes one entry, by its range, from a token's allow list",
		Long: `
Removes <entry> from the allow list of <label>: every entry of its range,
however written (127.0.0.9 and 127.0.0.9/32 are one range). A token whose
allow list becomes empty stays listed and is refused everywhere: it never
becomes unlisted.
`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.runNew(cmd, "remove", func(t tokensTarget) error {
				return changeEntry(t, cmd.OutOrStdout(), args[0], func(_ *entryOut, cond tokenstore.Cond) (*entryOut, error) {
					after, err := t.remove(args[0], args[1], cond)
					return &after, err
				})
			})
		},
	}

	suspendCmd := func(name string, on bool, short string) *cobra.Command {
		return &cobra.Command{
			Use:   name + " <label>",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return f.runNew(cmd, name, func(t tokensTarget) error {
					return changeEntry(t, cmd.OutOrStdout(), args[0], func(_ *entryOut, cond tokenstore.Cond) (*entryOut, error) {
						after, err := t.suspend(args[0], on, cond)
						return &after, err
					})
				})
			},
		}
	}

	var minRequests int
	promoteCmd := &cobra.Command{
		Use:   "promote <label> --min-requests <n>",
		Short: "Allows what a node learned of a token in report mode, then enforces it",
		Long: `
Adds to the allow list of <label> the addresses the Caddy at --admin saw
the token used from in report mode at least --min-requests times (and never
refused in enforce mode), then switches the token to enforce. It prints
each address it left out, and why.

Promote is node-local: it uses what that one Caddy learned. It needs a
running Caddy, so it takes --admin only.
`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.runNew(cmd, "promote", func(t tokensTarget) error {
				var promoted []string
				var leftOut []promoteLeftOut
				err := changeEntry(t, cmd.OutOrStdout(), args[0], func(_ *entryOut, cond tokenstore.Cond) (*entryOut, error) {
					p, err := t.promote(args[0], minRequests, cond)
					promoted, leftOut = p.Promoted, p.LeftOut
					return &p.Entry, err
				})
				if err == nil {
					for _, l := range leftOut {
						fmt.Fprintf(cmd.OutOrStdout(), "%s: left out %s: %s\n", args[0], l.IP, l.Detail)
					}
				}
				if err == nil && len(promoted) == 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: no address it was used from in report mode was seen at least %s by %s; promote is node-local\n", args[0], plural(minRequests, "time"), t.where())
				}
				return err
			})
		},
	}
	promoteCmd.Flags().IntVar(&minRequests, "min-requests", 0, "how often an address must have been seen to be allowed")

	getCmd := &cobra.Command{
		Use:   "get <label>",
		Short: "Prints one entry as JSON, its token as its digest",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.runNew(cmd, "get", func(t tokensTarget) error {
				e, err := t.get(args[0])
				if err != nil {
					return err
				}
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(e)
			})
		},
	}

	var after string
	var limit int
	list := &cobra.Command{
		Use:   "list [--after <label>] [--limit <n>]",
		Short: "Lists a page of labels, with what each allows",
		Long: `
Prints a page of the store's entries in label order, one line each: the
label, a tab, and what it allows. When there are more, the next page's
--after is said on standard error. No token is printed, not even as its
digest; get prints one entry whole, export the store.

With --redis, list [<label>...] prints the store (or the labels given) as
a tokens_file, tokens as digests, as before the token store.
`,
		RunE: func(cmd *cobra.Command, args []string) error {
			target, err := f.target(cmd)
			if err != nil {
				return err
			}
			if target == targetRedis {
				if err := refuseFlags(cmd, target, "after", "limit"); err != nil {
					return err
				}
				return f.run(cmd, func(ctx context.Context, s *tokenStore) error {
					return s.list(ctx, cmd.OutOrStdout(), args)
				})
			}
			if len(args) > 0 {
				return fmt.Errorf("list takes no labels with %s: get <label> prints one entry", targetFlag(target))
			}
			return f.runTarget(cmd, target, func(t tokensTarget) error {
				page, err := t.list(after, limit)
				if err != nil {
					return err
				}
				printPage(cmd.OutOrStdout(), page)
				if page.Next != "" {
					fmt.Fprintf(cmd.ErrOrStderr(), "more after %s: list --after %s\n", page.Next, page.Next)
				}
				return nil
			})
		},
	}
	list.Flags().StringVar(&after, "after", "", "list the labels after this one (the next page)")
	list.Flags().IntVar(&limit, "limit", defaultListLimit, fmt.Sprintf("how many entries to list, 1 to %d", tokenstore.MaxList))

	imp := &cobra.Command{
		Use:   "import <tokens_file>",
		Short: "Adds or replaces every token of a tokens_file",
		Long: `
Writes every entry of a tokens_file (a JSON object of label to entry, as
export writes; - reads standard input) into the store, replacing entries of
the same labels. Tokens given as the secret are stored as digests.

The import is all or nothing: every entry is checked as one change would
be, against the store too, before any is written, and then all are written
in one transaction. An entry that is refused refuses the import, naming it,
and nothing of it is kept.

With --redis, placeholders ({env.NAME}, {file.PATH}) are resolved here; the
entries are written in one MULTI/EXEC, and then the nodes load the whole
store.
`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			target, err := f.target(cmd)
			if err != nil {
				return err
			}
			if target != targetRedis {
				return f.runTarget(cmd, target, func(t tokensTarget) error {
					in, err := openInput(cmd, args[0])
					if err != nil {
						return err
					}
					defer in.Close()
					res, err := t.importFrom(in)
					if err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "imported %s into %s (%d replaced)\n", plural(res.Imported, "token"), t.where(), res.Replaced)
					return nil
				})
			}
			return f.run(cmd, func(ctx context.Context, s *tokenStore) error {
				n, err := s.importFile(ctx, args[0])
				if err == nil {
					fmt.Fprintf(cmd.OutOrStdout(), "imported %s\n", plural(n, "token"))
				}
				return err
			})
		},
	}

	var output string
	export := &cobra.Command{
		Use:   "export [-o <file>]",
		Short: "Writes the whole store as a tokens_file, tokens as digests",
		Long: `
Writes every entry of the store as a tokens_file (digests only), to
standard output or to -o <file> (mode 0600, written whole or not at all).
import takes it back, into this store or another: it is the backup, and the
move between a store file and Redis. With --redis it prints what list does.
`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			target, err := f.target(cmd)
			if err != nil {
				return err
			}
			if target == targetRedis {
				return f.run(cmd, func(ctx context.Context, s *tokenStore) error {
					w, done, err := exportOutput(cmd, output)
					if err != nil {
						return err
					}
					return done(s.list(ctx, w, nil))
				})
			}
			return f.runTarget(cmd, target, func(t tokensTarget) error {
				return writeExport(t, cmd, output)
			})
		},
	}
	export.Flags().StringVarP(&output, "output", "o", "", "file to write (default: standard output)")

	compact := &cobra.Command{
		Use:   "compact",
		Short: "Rewrites a store file without its free pages (--store only)",
		Long: `
Rewrites the --store file without the pages its deleted and replaced
entries left free, and prints its size before and after. It needs the file
to itself: a file a running Caddy holds is refused. The new file is synced
and renamed over the old one, so a crash leaves one or the other.
`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			target, err := f.target(cmd)
			if err != nil {
				return err
			}
			if target != targetStore {
				return errors.New("compact rewrites a store file, which no Caddy may hold while it runs: give --store <path>")
			}
			return compactStore(cmd.OutOrStdout(), f.store)
		},
	}

	cmd.AddCommand(put, allowCmd, del, removeCmd,
		suspendCmd("suspend", true, "Suspends a token: refused everywhere (token_suspended) until resumed"),
		suspendCmd("resume", false, "Resumes a suspended token"),
		promoteCmd, getCmd, list, imp, export, compact)
	return cmd
}

// runNew runs a command that only the admin and store targets have.
func (f *tokensFlags) runNew(cmd *cobra.Command, name string, do func(tokensTarget) error) error {
	target, err := f.target(cmd)
	if err != nil {
		return err
	}
	switch {
	case target == targetRedis:
		return fmt.Errorf("%s is not available with --redis; it works with --admin and --store", name)
	case target == targetStore && name == "promote":
		return errors.New("promote adds the addresses a running node learned in report mode, which only that node knows: use --admin <address> of that node, not --store")
	}
	return f.runTarget(cmd, target, do)
}

// exportOutput is where the Redis export writes: standard output, or a
// file written beside path and renamed over it by done.
func exportOutput(cmd *cobra.Command, path string) (io.Writer, func(error) error, error) {
	if path == "" || path == "-" {
		return cmd.OutOrStdout(), func(err error) error { return err }, nil
	}
	tmp := path + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, nil, err
	}
	return out, func(err error) error {
		if err == nil {
			err = out.Sync()
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp, path)
		}
		if err != nil {
			os.Remove(tmp)
		}
		return err
	}, nil
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func denyNote(deny []string) string {
	if len(deny) == 0 {
		return ""
	}
	return "; deny " + strings.Join(deny, ",")
}

type tokensFlags struct {
	admin, config, adapter string
	store, storeName       string
	logger                 *zap.Logger // --store's audit lines; nil: caddy.Log()

	src                  RedisSource
	passwordEnv          string
	tls                  bool
	tlsCA, tlsServerName string
}

// run connects and calls do. A command that writes (all but list) first
// makes sure the store can be written (tokenStore.ready).
func (f *tokensFlags) run(cmd *cobra.Command, do func(context.Context, *tokenStore) error) error {
	src := f.src
	if src.Address == "" {
		src.Address = DefaultRedisAddress
	}
	src.Password = os.Getenv(f.passwordEnv)
	if f.tls || f.tlsCA != "" || f.tlsServerName != "" {
		src.TLS = &RedisTLS{ServerName: f.tlsServerName, CAFile: f.tlsCA}
	}
	opts, err := redisOptions(&src, nil)
	if err != nil {
		return err
	}
	useZapForRedis()
	c := redis.NewClient(opts)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := &tokenStore{c: c, keys: keysFor(src.KeyPrefix), notes: cmd.ErrOrStderr()}
	if err := s.ready(ctx, cmd.Name() != "list"); err != nil {
		if isAuthError(err) {
			return errors.New(authMessage(err))
		}
		return err
	}
	return do(ctx, s)
}

// tokenDigest returns the hex digest given, or that of the token on in.
func tokenDigest(given string, in io.Reader) (string, error) {
	if given != "" {
		d := strings.TrimPrefix(given, DigestPrefix)
		if _, err := ParseDigest(d); err != nil {
			return "", err
		}
		return strings.ToLower(d), nil
	}
	var tok string
	var err error
	if in == os.Stdin {
		tok, err = readTokenInput()
	} else {
		tok, err = readToken(in)
	}
	if err != nil {
		return "", err
	}
	d, err := hashToken(tok)
	if err != nil {
		return "", err
	}
	return strings.TrimPrefix(d, DigestPrefix), nil
}

// tokenStore writes a Redis store the way nodes read it.
type tokenStore struct {
	c     *redis.Client
	keys  redisKeys
	notes io.Writer // where notes for the user go (standard error); nil: none
}

// ready checks that the store can be read, and for write that it can be
// written, before anything is: its schema is this release's (a schema 1
// store is moved to schema 2 before the first write; read, its entries are
// the legacy hash's) and its version key, if any, holds an integer.
func (s *tokenStore) ready(ctx context.Context, write bool) error {
	if write {
		if err := s.checkVersion(ctx, s.c); err != nil {
			return err
		}
	}
	schema, err := s.c.Get(ctx, s.keys.Schema).Result()
	switch {
	case errors.Is(err, redis.Nil) && !write:
		if n, _ := s.c.Exists(ctx, s.keys.Legacy).Result(); n > 0 {
			s.keys.Tokens = s.keys.Legacy
		}
		return nil
	case errors.Is(err, redis.Nil):
		return s.upgradeSchema(ctx)
	case err != nil:
		return err
	case schema != strconv.Itoa(storeSchema):
		return fmt.Errorf("the store's schema (%s = %q) is not this release's (%d); use the caddy of the release that wrote it", s.keys.Schema, schema, storeSchema)
	}
	return nil
}

// checkVersion refuses a store whose version key holds no integer: INCR
// would fail after the entry was written.
func (s *tokenStore) checkVersion(ctx context.Context, c redis.Cmdable) error {
	v, err := c.Get(ctx, s.keys.Version).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		return err
	}
	if n, err := strconv.ParseInt(v, 10, 64); err != nil || n < 0 {
		return fmt.Errorf("the store's version key %s holds %q, not an integer; nothing written. Set it to an integer first (e.g. redis-cli SET %s 1), so that nodes can tell which changes they missed",
			s.keys.Version, quoteValue(v), s.keys.Version)
	}
	return nil
}

// quoteValue shows a short value, and only the length of a long one.
func quoteValue(v string) string {
	if len(v) > 20 {
		return fmt.Sprintf("(%d bytes)", len(v))
	}
	return v
}

// upgradeSchema moves a schema 1 store to schema 2: its entries are copied
// to the schema 2 hash with the digest index, and the schema key is set,
// in one transaction. The schema 1 hash stays as it was, so nodes of the
// previous release keep serving what they had.
func (s *tokenStore) upgradeSchema(ctx context.Context) error {
	err := s.c.Watch(ctx, func(tx *redis.Tx) error {
		if n, err := tx.Exists(ctx, s.keys.Schema).Result(); err != nil || n > 0 {
			return err // upgraded meanwhile
		}
		old, err := tx.HGetAll(ctx, s.keys.Legacy).Result()
		if err != nil {
			return err
		}
		labels := sortedKeys(old)
		index := map[string]string{}
		for _, label := range labels {
			if e := decodeEntry(old[label]); e.claimed {
				d := hex.EncodeToString(e.claim[:])
				if other, taken := index[d]; taken {
					s.note("note: schema 1 entries %q and %q have the same token; the index gives it to %q, and nodes skip %q", other, label, other, label)
					continue
				}
				index[d] = label
			}
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for _, label := range labels {
				p.HSet(ctx, s.keys.Tokens, label, old[label])
			}
			for d, label := range index {
				p.HSet(ctx, s.keys.Digests, d, label)
			}
			p.Set(ctx, s.keys.Schema, storeSchema, 0)
			p.Incr(ctx, s.keys.Version)
			p.Publish(ctx, s.keys.Changes, reloadAll)
			return nil
		})
		if err == nil && len(labels) > 0 {
			s.note("note: the store moved to schema %d: %s copied from %s to %s, with a digest index", storeSchema, plural(len(labels), "entry"), s.keys.Legacy, s.keys.Tokens)
		}
		return err
	}, s.keys.Schema, s.keys.Legacy, s.keys.Version)
	if errors.Is(err, redis.TxFailedErr) {
		return errors.New("the store changed while moving it to schema 2; try again")
	}
	return err
}

func (s *tokenStore) note(format string, args ...any) {
	if s.notes != nil {
		fmt.Fprintf(s.notes, format+"\n", args...)
	}
}

// checkEntry applies the entry rules (checkStoreEntry) and notes the set
// names, which only the nodes can check.
func (s *tokenStore) checkEntry(label string, tp *TokenPolicy) error {
	if err := checkStoreEntry(label, tp); err != nil {
		return err
	}
	if note := setNamesNote(label, tp.Allow, tp.Deny); note != "" {
		s.note("%s", note)
	}
	return nil
}

// setNamesNote says which ip_set names of lists a writer without the
// nodes' configs cannot check; "" if none.
func setNamesNote(label string, lists ...[]string) string {
	var sets []string
	for _, list := range lists {
		for _, r := range list {
			if isSetName(r) && !slices.Contains(sets, quoteEntry(r)) {
				sets = append(sets, quoteEntry(r))
			}
		}
	}
	if len(sets) == 0 {
		return ""
	}
	return fmt.Sprintf("note: token %q: %s cannot be checked here: ip_set names are defined in the nodes' configs; a node that does not define one matches nothing for it, and logs it",
		label, strings.Join(sets, ", "))
}

// entryDigest is the hex digest of an entry's token.
func entryDigest(tp *TokenPolicy) string {
	if tp.TokenSHA256 != "" {
		d, _ := ParseDigest(tp.TokenSHA256)
		return hex.EncodeToString(d[:])
	}
	d := sha256.Sum256([]byte(tp.Token))
	return hex.EncodeToString(d[:])
}

// update changes one entry, and its digest index entry, in a transaction
// that retries if either is changed meanwhile. change gets the current
// entry (nil if none) and returns the new one.
func (s *tokenStore) update(ctx context.Context, label string, change func(cur *TokenPolicy) (*TokenPolicy, error)) error {
	if err := checkLabel(label); err != nil {
		return err
	}
	return s.inTx(ctx, func(tx *redis.Tx) error {
		if err := s.checkVersion(ctx, tx); err != nil {
			return err
		}
		var cur *TokenPolicy
		raw, err := tx.HGet(ctx, s.keys.Tokens, label).Result()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return err
		default:
			e := decodeEntry(raw)
			if e.err != nil {
				return fmt.Errorf("token %q in the store: %w; replace it with delete --unrestrict and put, or fix it by hand", label, e.err)
			}
			// Edited as one entry of each range, however often the
			// stored entry lists it.
			cur = mergeDuplicates(&e.tp)
		}
		var was string
		if cur != nil {
			was = entryDigest(cur)
		}
		next, err := change(cur)
		if err != nil {
			return err
		}
		tp, err := digestOnly(*next, nil) // a token written by hand
		if err != nil {
			return &ConfigError{Token: label, Err: err}
		}
		next = &tp
		if err := refuseDuplicates(label, next); err != nil {
			return err
		}
		if err := s.checkEntry(label, next); err != nil {
			return err
		}
		d := entryDigest(next)
		owner, err := tx.HGet(ctx, s.keys.Digests, d).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		if owner != "" && owner != label {
			return fmt.Errorf("token %q: the token is already in the store as %q; a token can have one label only (nothing written; an entry written by hand with another label's token is removed with delete --unrestrict, which leaves %q as it is)", label, owner, owner)
		}
		if cur != nil && d != was {
			return fmt.Errorf("token %q is in the store with another token; a label's token does not change, as the old token would become unlisted: put the new token under a new label, then delete this one (which revokes the old token)", label)
		}
		b, _ := json.Marshal(next)
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, s.keys.Tokens, label, string(b))
			p.HSet(ctx, s.keys.Digests, d, label)
			p.Incr(ctx, s.keys.Version)
			p.Publish(ctx, s.keys.Changes, label)
			return nil
		})
		return err
	})
}

// inTx runs fn in a transaction that watches the entries, the index and
// the version, and runs it again while another writer changes them first.
func (s *tokenStore) inTx(ctx context.Context, fn func(*redis.Tx) error) error {
	for range 10 {
		err := s.c.Watch(ctx, fn, s.keys.Tokens, s.keys.Digests, s.keys.Version)
		if !errors.Is(err, redis.TxFailedErr) {
			return err
		}
	}
	return errors.New("the store kept changing; try again")
}

// unrestrict removes an entry and its digest index entry: its token
// becomes unlisted.
func (s *tokenStore) unrestrict(ctx context.Context, label string) error {
	return s.inTx(ctx, func(tx *redis.Tx) error {
		if err := s.checkVersion(ctx, tx); err != nil {
			return err
		}
		raw, err := tx.HGet(ctx, s.keys.Tokens, label).Result()
		if errors.Is(err, redis.Nil) {
			return fmt.Errorf("token %q is not in the store", label)
		} else if err != nil {
			return err
		}
		// The index entries of this label: the entry's own token, and
		// any the index gives the label (an entry that does not
		// decode).
		index, err := tx.HGetAll(ctx, s.keys.Digests).Result()
		if err != nil {
			return err
		}
		var digests []string
		for d, l := range index {
			if l == label {
				digests = append(digests, d)
			}
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HDel(ctx, s.keys.Tokens, label)
			if e := decodeEntry(raw); e.claimed {
				if d := hex.EncodeToString(e.claim[:]); index[d] == label && !slices.Contains(digests, d) {
					digests = append(digests, d)
				}
			}
			if len(digests) > 0 {
				p.HDel(ctx, s.keys.Digests, digests...)
			}
			p.Incr(ctx, s.keys.Version)
			p.Publish(ctx, s.keys.Changes, label)
			return nil
		})
		return err
	})
}

// reloadAll is the change message that makes every node load the whole
// store, as after an import.
const reloadAll = "*"

// importBatch is how many entries import checks, or sets, per command.
const importBatch = 512

// importTries is how many times import writes, when the store changes
// between its check and its write.
const importTries = 3

// importFile writes every entry of a tokens_file, all or nothing, then
// bumps the version and asks the nodes to load everything. The whole file
// is checked first (every entry, and every token against the store's
// index), so a refused entry writes nothing; then, under WATCH, it is
// checked again against the index and written in one MULTI/EXEC, so that
// no node ever reads part of it. A change to the store between the check
// and the write (to any label) makes the write fail whole; it is tried
// again, importTries times in all.
func (s *tokenStore) importFile(ctx context.Context, path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	type row struct{ label, digest, value string }
	var rows []row
	byDigest := map[string]string{}
	repl := caddy.NewReplacer()
	err = eachTokenBatch(f, func(entries []tokenEntry) error {
		for i := range entries {
			e := &entries[i]
			tp, err := digestOnly(e.tp, repl)
			if err != nil {
				return &ConfigError{Token: e.label, Err: err}
			}
			if err := s.checkEntry(e.label, &tp); err != nil {
				return err
			}
			d := entryDigest(&tp)
			if other, dup := byDigest[d]; dup {
				return &ConfigError{Token: e.label, Err: fmt.Errorf("same token as %q; a token can have one label only", other)}
			}
			byDigest[d] = e.label
			b, _ := json.Marshal(&tp)
			rows = append(rows, row{e.label, d, string(b)})
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("%s: %w (nothing written)", path, err)
	}
	// check refuses a token the store has under another label, and a
	// label the store has with another token.
	check := func(c redis.Cmdable, rows []row) error {
		if len(rows) == 0 {
			return nil
		}
		labels, digests := make([]string, len(rows)), make([]string, len(rows))
		for i, r := range rows {
			labels[i], digests[i] = r.label, r.digest
		}
		owners, err := c.HMGet(ctx, s.keys.Digests, digests...).Result()
		if err != nil {
			return err
		}
		cur, err := c.HMGet(ctx, s.keys.Tokens, labels...).Result()
		if err != nil {
			return err
		}
		for i, r := range rows {
			if o, ok := owners[i].(string); ok && o != r.label {
				return fmt.Errorf("token %q: the token is already in the store as %q; a token can have one label only", r.label, o)
			}
			if v, ok := cur[i].(string); ok {
				if e := decodeEntry(v); e.claimed && hex.EncodeToString(e.claim[:]) != r.digest {
					return fmt.Errorf("token %q is in the store with another token; a label's token does not change, as the old token would become unlisted: import it under a new label", r.label)
				}
			}
		}
		return nil
	}
	for i := 0; i < len(rows); i += importBatch {
		if err := check(s.c, rows[i:min(i+importBatch, len(rows))]); err != nil {
			return 0, fmt.Errorf("%s: %w (nothing written)", path, err)
		}
	}
	write := func(tx *redis.Tx) error {
		if err := s.checkVersion(ctx, tx); err != nil {
			return err
		}
		for i := 0; i < len(rows); i += importBatch {
			if err := check(tx, rows[i:min(i+importBatch, len(rows))]); err != nil {
				return err
			}
		}
		_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for i := 0; i < len(rows); i += importBatch {
				batch := rows[i:min(i+importBatch, len(rows))]
				tokens, digests := make([]any, 0, 2*len(batch)), make([]any, 0, 2*len(batch))
				for _, r := range batch {
					tokens = append(tokens, r.label, r.value)
					digests = append(digests, r.digest, r.label)
				}
				p.HSet(ctx, s.keys.Tokens, tokens...)
				p.HSet(ctx, s.keys.Digests, digests...)
			}
			p.Incr(ctx, s.keys.Version)
			return nil
		})
		return err
	}
	if len(rows) > 0 {
		for try := 1; ; try++ {
			err = s.c.Watch(ctx, write, s.keys.Tokens, s.keys.Digests, s.keys.Version)
			if !errors.Is(err, redis.TxFailedErr) || try == importTries {
				break
			}
		}
		if errors.Is(err, redis.TxFailedErr) {
			err = fmt.Errorf("the store changed between the check and the write, %d times; run the import again", importTries)
		}
		if err != nil {
			return 0, fmt.Errorf("%s: %w (nothing written)", path, err)
		}
	}
	n := len(rows)
	_, err = s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Incr(ctx, s.keys.Version)
		p.Publish(ctx, s.keys.Changes, reloadAll)
		return nil
	})
	return n, err
}

// digestOnly returns tp with its token replaced by its SHA-256, so that no
// secret is written to the store or printed, and checkSecret's verdict on
// the token. A placeholder is resolved with repl, on the machine writing
// the store: nodes never resolve a store entry's placeholders. With repl
// nil, a placeholder is kept.
func digestOnly(tp TokenPolicy, repl *caddy.Replacer) (TokenPolicy, error) {
	if tp.Token == "" || IsPlaceholder(tp.Token) && repl == nil {
		return tp, nil
	}
	tok := tp.Token
	err := checkTokenText(tok)
	if err == nil && IsPlaceholder(tok) {
		name := tok
		if tok, err = repl.ReplaceOrErr(tok, true, true); err != nil {
			return tp, fmt.Errorf("token %s: %w", name, err)
		}
		if err := checkSecret(tok); err != nil {
			return tp, fmt.Errorf("token %s: %w", name, err)
		}
	} else if err == nil {
		err = checkSecret(tok)
	}
	d := sha256.Sum256([]byte(tok))
	tp.Token, tp.TokenSHA256 = "", hex.EncodeToString(d[:])
	return tp, err
}

// list prints entries as a tokens_file, every token as its digest.
func (s *tokenStore) list(ctx context.Context, w io.Writer, labels []string) error {
	var m map[string]string
	if len(labels) == 0 {
		var err error
		if m, err = s.c.HGetAll(ctx, s.keys.Tokens).Result(); err != nil {
			return err
		}
		for l := range m {
			labels = append(labels, l)
		}
		slices.Sort(labels)
	} else {
		vals, err := s.c.HMGet(ctx, s.keys.Tokens, labels...).Result()
		if err != nil {
			return err
		}
		m = map[string]string{}
		for i, v := range vals {
			if v == nil {
				return fmt.Errorf("token %q is not in the store", labels[i])
			}
			m[labels[i]] = v.(string)
		}
	}
	out := bufio.NewWriter(w)
	fmt.Fprint(out, "{")
	for i, label := range labels {
		e := decodeEntry(m[label])
		if i > 0 {
			fmt.Fprint(out, ",")
		}
		name, _ := json.Marshal(label)
		if e.err != nil {
			// Not JSON a node takes: say so without quoting it, as it
			// may hold a token.
			fmt.Fprintf(out, "\n  %s: {\"error\": %q}", name, e.err.Error())
			continue
		}
		tp, _ := digestOnly(e.tp, nil) // listed as is, even a token no node takes
		b, _ := json.Marshal(&tp)
		fmt.Fprintf(out, "\n  %s: %s", name, b)
	}
	if len(labels) > 0 {
		fmt.Fprint(out, "\n")
	}
	fmt.Fprint(out, "}\n")
	return out.Flush()
}
