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
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
)

// tokensCommand is `caddy ip-allowlist tokens`: the tokens of a Redis
// store, changed the way every node expects (see RedisSource).
func tokensCommand() *cobra.Command {
	var f tokensFlags
	cmd := &cobra.Command{
		Use:   "tokens",
		Short: "Lists and changes the tokens of a Redis token store",
		Long: `
Lists and changes the tokens of the Redis store that ip_allowlist's redis
source reads. Every change is one transaction that sets the entry, bumps
<prefix>version and publishes the label on <prefix>changes, so every node
applies it within moments.

Only digests are written: put reads the token from standard input (or takes
--token-sha256) and stores its SHA-256. list never prints a token.

  caddy ip-allowlist tokens put partner-a --allow 203.0.113.0/24 < token.txt
  caddy ip-allowlist tokens allow partner-a 198.51.100.7
  caddy ip-allowlist tokens delete partner-a
  caddy ip-allowlist tokens list
  caddy ip-allowlist tokens import tokens.json

The password, if any, is read from the environment variable --password-env
names (default REDIS_PASSWORD), never from the command line.
`,
	}
	p := cmd.PersistentFlags()
	p.StringVar(&f.src.Address, "redis", DefaultRedisAddress, "Redis host:port")
	p.StringVar(&f.src.Username, "username", "", "Redis ACL user")
	p.StringVar(&f.passwordEnv, "password-env", "REDIS_PASSWORD", "environment variable holding the Redis password")
	p.IntVar(&f.src.DB, "db", 0, "Redis database number")
	p.StringVar(&f.src.KeyPrefix, "prefix", DefaultKeyPrefix, "key prefix, as the redis source's key_prefix")
	p.BoolVar(&f.tls, "tls", false, "connect with TLS")
	p.StringVar(&f.tlsCA, "tls-ca", "", "PEM file of CAs to verify the server with (implies --tls)")
	p.StringVar(&f.tlsServerName, "tls-server-name", "", "name to verify the server's certificate for (implies --tls)")

	put := &cobra.Command{
		Use:   "put <label> --allow <range>... [--deny <range>...] [--token-sha256 <hex>]",
		Short: "Adds a token, or replaces a token's ranges",
		Long: `
Sets the entry of <label>. The token is read from standard input (a pipe:
everything less one trailing newline; at a terminal, asked for without
echo), or given as --token-sha256. For a label already in the store,
--keep-token keeps its token and replaces only the ranges.
`,
		Args: cobra.ExactArgs(1),
	}
	var allow, deny []string
	var digest string
	var keep bool
	put.Flags().StringSliceVar(&allow, "allow", nil, "where the token may be used from (repeat, or separate with commas)")
	put.Flags().StringSliceVar(&deny, "deny", nil, "exceptions inside allow")
	put.Flags().StringVar(&digest, "token-sha256", "", "the token's SHA-256 (64 hex digits, sha256: optional) instead of reading the token")
	put.Flags().BoolVar(&keep, "keep-token", false, "keep the token of the existing entry")
	put.RunE = func(cmd *cobra.Command, args []string) error {
		return f.run(func(ctx context.Context, s *tokenStore) error {
			tp := TokenPolicy{Allow: allow, Deny: deny}
			if !keep {
				d, err := tokenDigest(digest, cmd.InOrStdin())
				if err != nil {
					return err
				}
				tp.TokenSHA256 = d
			}
			return s.update(ctx, args[0], func(cur *TokenPolicy) (*TokenPolicy, error) {
				if keep {
					if cur == nil {
						return nil, fmt.Errorf("token %q is not in the store; --keep-token needs an existing entry", args[0])
					}
					tp.Token, tp.TokenSHA256 = cur.Token, cur.TokenSHA256
				}
				return &tp, nil
			})
		})
	}

	allowCmd := &cobra.Command{
		Use:   "allow <label> <range>...",
		Short: "Adds ranges to a token's allow list",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.run(func(ctx context.Context, s *tokenStore) error {
				return s.update(ctx, args[0], func(cur *TokenPolicy) (*TokenPolicy, error) {
					if cur == nil {
						return nil, fmt.Errorf("token %q is not in the store; add it with put", args[0])
					}
					for _, r := range args[1:] {
						if !slices.Contains(cur.Allow, r) {
							cur.Allow = append(cur.Allow, r)
						}
					}
					return cur, nil
				})
			})
		},
	}

	del := &cobra.Command{
		Use:   "delete <label>...",
		Short: "Deletes tokens",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.run(func(ctx context.Context, s *tokenStore) error {
				for _, label := range args {
					if err := s.update(ctx, label, func(cur *TokenPolicy) (*TokenPolicy, error) {
						if cur == nil {
							return nil, fmt.Errorf("token %q is not in the store", label)
						}
						return nil, nil
					}); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}

	list := &cobra.Command{
		Use:   "list [<label>...]",
		Short: "Prints the store (or the labels given) as a tokens_file, tokens as digests",
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.run(func(ctx context.Context, s *tokenStore) error {
				return s.list(ctx, cmd.OutOrStdout(), args)
			})
		},
	}

	imp := &cobra.Command{
		Use:   "import <tokens_file>",
		Short: "Adds or replaces every token of a tokens_file",
		Long: `
Writes every entry of a tokens_file (a JSON object of label to entry) into
the store, replacing entries of the same labels, then tells the nodes to
load the whole store. Tokens given as the secret are stored as digests.
`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.run(func(ctx context.Context, s *tokenStore) error {
				n, err := s.importFile(ctx, args[0])
				if err == nil {
					fmt.Fprintf(cmd.OutOrStdout(), "imported %d tokens\n", n)
				}
				return err
			})
		},
	}
	cmd.AddCommand(put, allowCmd, del, list, imp)
	return cmd
}

type tokensFlags struct {
	src                  RedisSource
	passwordEnv          string
	tls                  bool
	tlsCA, tlsServerName string
}

func (f *tokensFlags) run(do func(context.Context, *tokenStore) error) error {
	src := f.src
	src.Password = os.Getenv(f.passwordEnv)
	if f.tls || f.tlsCA != "" || f.tlsServerName != "" {
		src.TLS = &RedisTLS{ServerName: f.tlsServerName, CAFile: f.tlsCA}
	}
	opts, err := RedisOptions(&src, nil)
	if err != nil {
		return err
	}
	c := redis.NewClient(opts)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	return do(ctx, &tokenStore{c: c, keys: Keys(src.KeyPrefix)})
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
	c    *redis.Client
	keys RedisKeys
}

// checkEntry refuses an entry no node would take. ip_set names cannot be
// checked here: they are the nodes' config.
func checkEntry(label string, tp *TokenPolicy) error {
	if err := CheckLabel(label); err != nil {
		return err
	}
	if tp.Token == "" && tp.TokenSHA256 == "" {
		return fmt.Errorf("token %q: no token or token_sha256 given", label)
	}
	if tp.TokenSHA256 != "" {
		if _, err := ParseDigest(tp.TokenSHA256); err != nil {
			return fmt.Errorf("token %q: %w", label, err)
		}
	}
	if len(tp.Allow) == 0 {
		return fmt.Errorf("token %q: allow is empty; list where the token may be used from (use any for everywhere)", label)
	}
	for field, list := range map[string][]string{"allow": tp.Allow, "deny": tp.Deny} {
		for i, r := range list {
			if IsSetName(r) && r != KeywordAny && r != KeywordPrivateRanges {
				continue
			}
			if _, err := ParseRange(r); err != nil {
				return fmt.Errorf("token %q: %s[%d] %q: %w", label, field, i, r, err)
			}
		}
	}
	return nil
}

// update changes one entry in a transaction that retries if the entry is
// changed meanwhile. change gets the current entry (nil if none) and
// returns the new one (nil to delete).
func (s *tokenStore) update(ctx context.Context, label string, change func(cur *TokenPolicy) (*TokenPolicy, error)) error {
	if err := CheckLabel(label); err != nil {
		return err
	}
	for range 10 {
		err := s.c.Watch(ctx, func(tx *redis.Tx) error {
			var cur *TokenPolicy
			raw, err := tx.HGet(ctx, s.keys.Tokens, label).Result()
			switch {
			case errors.Is(err, redis.Nil):
			case err != nil:
				return err
			default:
				e := decodeEntry(raw)
				if e.err != nil {
					return fmt.Errorf("token %q in the store: %w", label, e.err)
				}
				cur = &e.tp
			}
			next, err := change(cur)
			if err != nil {
				return err
			}
			var val string
			if next != nil {
				if err := checkEntry(label, next); err != nil {
					return err
				}
				b, _ := json.Marshal(next)
				val = string(b)
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				if next == nil {
					p.HDel(ctx, s.keys.Tokens, label)
				} else {
					p.HSet(ctx, s.keys.Tokens, label, val)
				}
				p.Incr(ctx, s.keys.Version)
				p.Publish(ctx, s.keys.Changes, label)
				return nil
			})
			return err
		}, s.keys.Tokens)
		if !errors.Is(err, redis.TxFailedErr) {
			return err
		}
	}
	return errors.New("the store kept changing; try again")
}

// ReloadAll is the change message that makes every node load the whole
// store, as after an import.
const ReloadAll = "*"

// importFile writes every entry of a tokens_file, in batches, then bumps
// the version and asks the nodes to load everything.
func (s *tokenStore) importFile(ctx context.Context, path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	var written error // an entry refused or a write failed, not the decoding
	err = eachTokenBatch(f, func(entries []tokenEntry) error {
		args := make([]any, 0, 2*len(entries))
		for i := range entries {
			e := &entries[i]
			tp, err := digestOnly(e.tp)
			if err != nil {
				err = fmt.Errorf("token %q: %w", e.label, err)
			} else {
				err = checkEntry(e.label, &tp)
			}
			if err != nil {
				written = err
				return err
			}
			b, _ := json.Marshal(&tp)
			args = append(args, e.label, string(b))
		}
		if err := s.c.HSet(ctx, s.keys.Tokens, args...).Err(); err != nil {
			written = err
			return err
		}
		n += len(entries)
		return nil
	})
	if written != nil {
		return 0, written
	}
	if err != nil {
		return n, fmt.Errorf("%s: %w (%d tokens were imported before it)", path, err, n)
	}
	_, err = s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Incr(ctx, s.keys.Version)
		p.Publish(ctx, s.keys.Changes, ReloadAll)
		return nil
	})
	return n, err
}

// digestOnly returns tp with a literal token replaced by its SHA-256, so
// that no secret is written to the store or printed, and checkSecret's
// verdict on the token. Placeholders stay: each node resolves them.
func digestOnly(tp TokenPolicy) (TokenPolicy, error) {
	if tp.Token == "" || IsPlaceholder(tp.Token) {
		return tp, nil
	}
	err := checkTokenText(tp.Token)
	if err == nil {
		err = checkSecret(tp.Token)
	}
	d := sha256.Sum256([]byte(tp.Token))
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
		tp, _ := digestOnly(e.tp) // listed as is, even a token no node takes
		b, _ := json.Marshal(&tp)
		fmt.Fprintf(out, "\n  %s: %s", name, b)
	}
	if len(labels) > 0 {
		fmt.Fprint(out, "\n")
	}
	fmt.Fprint(out, "}\n")
	return out.Flush()
}
