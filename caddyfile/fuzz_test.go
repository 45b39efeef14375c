package caddyfile_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	caddycfg "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	ipacaddyfile "github.com/ipallowlist/caddy-ip-allowlist/caddyfile"
	ipallowlist "github.com/ipallowlist/caddy-ip-allowlist/module"
)

// FuzzParse feeds ip_allowlist blocks to the directive parser. Whatever it
// accepts must provision, as long as nothing needs the environment or the
// disk: Caddyfile users get every error at adapt time, with file and line.
// Seeds: the ip_allowlist blocks of testdata/caddyfile_adapt.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("../testdata/caddyfile_adapt/*.caddyfiletest")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		if block := directiveBlock(string(data)); block != "" {
			f.Add(block)
		}
	}
	f.Add("ip_allowlist {\n\ttoken a\x00b any\n}")
	f.Add("ip_allowlist {\n\ttoken \"a\r\nb\" 1.2.3.4\n}")
	f.Add("ip_allowlist {\r\n\ttoken tok 010.0.0.1\r\n}")
	f.Add("ip_allowlist {\n\ttoken tok " + strings.Repeat("1.2.3.4 ", 1<<15) + "\n}")
	f.Fuzz(func(t *testing.T, input string) {
		tokens, err := caddycfg.Tokenize([]byte(input), "Caddyfile")
		if err != nil {
			return
		}
		h, err := ipacaddyfile.Parse(caddycfg.NewDispenser(tokens))
		if err != nil {
			return
		}
		if len(h.TokensFiles) > 0 || h.Redis != nil || h.Store != nil {
			return // files, stores and Redis are read at provision only
		}
		for _, tp := range h.Tokens {
			if ipallowlist.IsPlaceholder(tp.Token) {
				return // so are placeholders
			}
		}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		defer cancel()
		if err := h.Provision(ctx); err != nil {
			t.Fatalf("parsed but does not provision: %v\ninput:\n%s", err, input)
		}
	})
}

// directiveBlock returns the ip_allowlist block of a golden file's Caddyfile.
func directiveBlock(golden string) string {
	input, _, _ := strings.Cut(golden, "----------")
	lines := strings.Split(input, "\n")
	for i, l := range lines {
		if !strings.Contains(l, "ip_allowlist") {
			continue
		}
		indent := l[:len(l)-len(strings.TrimLeft(l, "\t"))]
		for j := i + 1; j < len(lines); j++ {
			if lines[j] == indent+"}" {
				return strings.Join(lines[i:j+1], "\n")
			}
		}
	}
	return ""
}
