package ipallowlist

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

func TestReadAndHashToken(t *testing.T) {
	for _, tt := range []struct {
		name, input, want, err string
	}{
		{"one trailing newline dropped", "secret-0123456789\n", "secret-0123456789", ""},
		{"CRLF dropped", "secret-0123456789\r\n", "secret-0123456789", ""},
		{"no newline", "secret-0123456789", "secret-0123456789", ""},
		{"only one newline dropped", "secret\n\n", "", "white space"},
		{"leading space refused", " secret", "", "white space"},
		{"empty refused", "\n", "", "empty token"},
		{"too long refused", strings.Repeat("x", maxTokenInput+1), "", "longer than"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := readToken(strings.NewReader(tt.input))
			var digest string
			if err == nil {
				digest, err = hashToken(tok)
			}
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if digest != "sha256:"+testkit.Digest(tt.want) {
				t.Errorf("digest = %s, want that of %q", digest, tt.want)
			}
		})
	}
}

func TestNewToken(t *testing.T) {
	random := bytes.Repeat([]byte{0xfb, 0xff, 0x01}, 11)[:32]
	tok, digest, err := newToken(bytes.NewReader(random))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if len(tok) != 43 || err != nil || !bytes.Equal(raw, random) {
		t.Errorf("token = %q, want the 32 random bytes in base64url without padding", tok)
	}
	if want, _ := hashToken(tok); digest != want {
		t.Errorf("digest %s is not the token's (%s)", digest, want)
	}
	if _, _, err := newToken(bytes.NewReader(make([]byte, 10))); err == nil {
		t.Error("a short random source made a token")
	}
	// The digest is what a Caddyfile token line takes.
	if _, err := ParseDigest(strings.TrimPrefix(digest, DigestPrefix)); err != nil {
		t.Error(err)
	}
}
