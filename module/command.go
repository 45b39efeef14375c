package ipallowlist

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "ip-allowlist",
		Usage: "hash-token | new-token | tokens put|allow|remove|suspend|resume|promote|delete|get|list|import|export|compact",
		Short: "Makes tokens and digests for ip_allowlist",
		Long: `
Tools for ip_allowlist tokens, so that no secret has to be written into a
config: only its digest.

  caddy ip-allowlist hash-token   reads a token and prints sha256:<hex>
  caddy ip-allowlist new-token    prints a new random token and its digest
  caddy ip-allowlist tokens ...   lists and changes the tokens of a token store:
                                  a running Caddy's (--admin, the default), a
                                  store file (--store) or Redis (--redis)
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(&cobra.Command{
				Use:   "hash-token",
				Short: "Reads a token and prints its sha256:<hex> digest",
				Long: `
Reads a token from standard input and prints sha256: and the 64 hex digits
of its SHA-256, as a Caddyfile token line takes it (in JSON, put the hex
digits in token_sha256).

At a terminal the token is asked for and not echoed. From a pipe, the whole
input is the token, less one trailing newline:

  printf %s "$TOKEN" | caddy ip-allowlist hash-token
`,
				Args: cobra.NoArgs,
				RunE: caddycmd.WrapCommandFuncForCobra(cmdHashToken),
			})
			cmd.AddCommand(&cobra.Command{
				Use:   "new-token",
				Short: "Prints a new random token and its sha256:<hex> digest",
				Long: `
Prints a new token (32 random bytes, base64url) on the first line and its
sha256:<hex> digest on the second. Give the token to its owner and put only
the digest in the config.
`,
				Args: cobra.NoArgs,
				RunE: caddycmd.WrapCommandFuncForCobra(cmdNewToken),
			})
			cmd.AddCommand(tokensCommand())
		},
	})
}

// maxTokenInput bounds what hash-token reads: a token is far shorter.
const maxTokenInput = 1 << 20

func cmdHashToken(caddycmd.Flags) (int, error) {
	tok, err := readTokenInput()
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	digest, err := hashToken(tok)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	fmt.Println(digest)
	return caddy.ExitCodeSuccess, nil
}

// readTokenInput reads a token from standard input: at a terminal, asked
// for without echo; from a pipe, as readToken.
func readTokenInput() (string, error) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return readToken(os.Stdin)
	}
	// Restore the terminal if interrupted while echo is off.
	state, _ := term.GetState(fd)
	c := make(chan os.Signal, 1)
	signal.Notify(c, os.Interrupt)
	go func() {
		<-c
		_ = term.Restore(fd, state)
		os.Exit(caddy.ExitCodeFailedStartup)
	}()
	defer signal.Stop(c)
	fmt.Fprint(os.Stderr, "Token: ")
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(os.Stderr)
	return string(b), err
}

// readToken reads a token from a pipe: everything, less one trailing
// newline (as echo and most editors add).
func readToken(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxTokenInput+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxTokenInput {
		return "", fmt.Errorf("input is longer than %d bytes; that is not a token", maxTokenInput)
	}
	s := strings.TrimSuffix(string(b), "\n")
	return strings.TrimSuffix(s, "\r"), nil
}

// hashToken returns the sha256:<hex> form of tok, refusing tokens the
// handler would refuse.
func hashToken(tok string) (string, error) {
	if err := checkSecret(tok); err != nil {
		return "", err
	}
	d := sha256.Sum256([]byte(tok))
	return DigestPrefix + hex.EncodeToString(d[:]), nil
}

func cmdNewToken(caddycmd.Flags) (int, error) {
	tok, digest, err := newToken(rand.Reader)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	fmt.Println(tok)
	fmt.Println(digest)
	return caddy.ExitCodeSuccess, nil
}

// newToken makes a token of 32 random bytes, base64url without padding
// (43 characters, safe in headers and query strings), and its digest.
func newToken(random io.Reader) (tok, digest string, err error) {
	var b [32]byte
	if _, err := io.ReadFull(random, b[:]); err != nil {
		return "", "", errors.New("reading random bytes: " + err.Error())
	}
	tok = base64.RawURLEncoding.EncodeToString(b[:])
	digest, err = hashToken(tok)
	return tok, digest, err
}
