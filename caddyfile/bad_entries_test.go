package caddyfile_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"

	ipallowlist "github.com/ipallowlist/caddy-ip-allowlist/module"
)

// The Caddyfile refuses every entry of testdata/bad_entries.json (the table
// the module's tests feed through JSON, tokens files, the store and the
// CLI) with the same words, at the line of the token or of its entry.
func TestBadEntriesCaddyfile(t *testing.T) {
	b, err := os.ReadFile("../testdata/bad_entries.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Name, Label, Want, Secret string
		Entry                     ipallowlist.TokenPolicy
		Not, Only                 []string
	}
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if len(c.Only) > 0 && !slices.Contains(c.Only, "caddyfile") || slices.Contains(c.Not, "caddyfile") {
			continue
		}
		if c.Label == "" {
			c.Label = "partner-a"
		}
		t.Run(c.Name, func(t *testing.T) {
			tok := strconv.Quote(c.Entry.Token)
			if c.Entry.TokenSHA256 != "" {
				tok = ipallowlist.DigestPrefix + c.Entry.TokenSHA256
			}
			var block strings.Builder
			fmt.Fprintf(&block, ":8080 {\n\tip_allowlist {\n\t\ttoken good-token-0123456789 127.0.0.1\n\t\ttoken %s {\n\t\t\tlabel %s\n", tok, c.Label)
			for _, a := range c.Entry.Allow {
				fmt.Fprintf(&block, "\t\t\tallow %s\n", a)
			}
			for _, d := range c.Entry.Deny {
				fmt.Fprintf(&block, "\t\t\tdeny %s\n", d)
			}
			// The error is at the line of the entry it names, else at the
			// token's (line 4).
			wantLine := 4
			if m := entryRef.FindStringSubmatch(c.Want); m != nil {
				i, _ := strconv.Atoi(m[2])
				wantLine = 6 + i
				if m[1] == "deny" {
					wantLine += len(c.Entry.Allow)
				}
			}
			if c.Entry.AllowBroad {
				block.WriteString("\t\t\tallow_broad\n")
			}
			block.WriteString("\t\t}\n\t}\n\trespond ok\n}\n")
			_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(block.String()), map[string]any{"filename": "Caddyfile"})
			if err == nil {
				t.Fatalf("adapted:\n%s\nwant an error containing %q", block.String(), c.Want)
			}
			msg := err.Error()
			at := fmt.Sprintf("at Caddyfile:%d", wantLine)
			if !strings.Contains(msg, c.Want) || !strings.HasSuffix(msg, at) {
				t.Errorf("error:\n  %s\nwant it to contain %q and end %q", msg, c.Want, at)
			}
			if c.Entry.TokenSHA256 == "" && strings.Contains(msg, c.Entry.Token) || c.Secret != "" && strings.Contains(msg, c.Secret) {
				t.Errorf("error shows what may be a token: %s", msg)
			}
		})
	}
}

var entryRef = regexp.MustCompile(`(allow|deny)\[(\d+)\]`)
