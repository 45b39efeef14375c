package caddyfile_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/ipallowlist/caddy-ip-allowlist/caddyfile"
)

// TestAdapt runs the golden files in testdata/caddyfile_adapt: a Caddyfile,
// a line of dashes, then the JSON it adapts to or the error text it gives.
func TestAdapt(t *testing.T) {
	files, err := filepath.Glob("../testdata/caddyfile_adapt/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(strings.TrimSuffix(name, ".caddyfiletest"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			input, expected, ok := strings.Cut(string(data), "----------")
			if !ok {
				t.Fatalf("%s: no ---------- separator", name)
			}
			input, expected = strings.TrimSpace(input)+"\n", strings.TrimSpace(expected)
			if strings.HasPrefix(expected, "{") {
				if !caddytest.CompareAdapt(t, name, input, "caddyfile", expected) {
					t.Errorf("%s: adapted JSON differs (diff above)", name)
				}
				return
			}
			_, _, err = caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), map[string]any{"filename": "Caddyfile"})
			if err == nil {
				t.Fatalf("%s: adapted; want error containing %q", name, expected)
			}
			if !strings.Contains(err.Error(), expected) {
				t.Errorf("%s: error\n  %v\nwant it to contain\n  %s", name, err, expected)
			}
			// The error goldens all use this token; no error may quote it.
			if strings.Contains(err.Error(), "tok-abc-123-long-enough") {
				t.Errorf("%s: error quotes the token: %v", name, err)
			}
		})
	}
}
