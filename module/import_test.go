package ipallowlist

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// An import is all or nothing: a record refused past the first 10,000
// (the size of a write transaction before) refuses the whole import with
// a 4xx naming it, and none of the records before it is kept.
func TestStoreImportRefusedLateKeepsNothing(t *testing.T) {
	for _, tt := range []struct {
		name   string
		record func(b *strings.Builder) // the 10,001st record
		status int
		want   string
	}{
		{"a stored label with another token", func(b *strings.Builder) {
			fmt.Fprintf(b, `"stored": {"token_sha256": "%s", "allow": ["198.51.100.7"]}`, testkit.Digest("late-other-token"))
		}, http.StatusConflict, `"stored"`},
		{"a stored token under another label", func(b *strings.Builder) {
			fmt.Fprintf(b, `"late": {"token_sha256": "%s", "allow": ["198.51.100.7"]}`, testkit.Digest(applyTok(1)))
		}, http.StatusConflict, `token "late": same token as "stored"`},
		{"a label the config lists", func(b *strings.Builder) {
			fmt.Fprintf(b, `"config-a": {"token_sha256": "%s", "allow": ["198.51.100.7"]}`, testkit.Digest("late-config"))
		}, http.StatusConflict, `token "config-a": the label is listed in tokens`},
		{"a token given twice in the import", func(b *strings.Builder) {
			fmt.Fprintf(b, `"late": {"token_sha256": "%s", "allow": ["198.51.100.7"]}`, testkit.Digest("late-0"))
		}, http.StatusBadRequest, `token "late": same token as "imp-00000"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := storeHandler(t, "")
			if r := routeCall(t, "PUT", "/ip-allowlist/tokens/stored", `{"token_sha256": "`+testkit.Digest(applyTok(1))+`", "allow": ["198.51.100.1"]}`); r.status != http.StatusCreated {
				t.Fatalf("setup: %d %s", r.status, r.body)
			}
			etag := routeCall(t, "GET", "/ip-allowlist/tokens/stored", "").header.Get("ETag")
			var b strings.Builder
			b.WriteString("{")
			for i := range 12_000 {
				if i == 10_000 {
					tt.record(&b)
					b.WriteString(",")
				}
				fmt.Fprintf(&b, `"imp-%05d": {"token_sha256": "%s", "allow": ["198.51.100.7"]},`, i, testkit.Digest(fmt.Sprint("late-", i)))
			}
			b.WriteString(`"imp-last": {"token_sha256": "` + testkit.Digest("late-last") + `", "allow": ["198.51.100.7"]}}`)
			before := h.current.Load()
			r := routeCall(t, "POST", "/ip-allowlist/import", b.String())
			var e struct{ Error string }
			r.json(t, &e)
			if r.status != tt.status || !strings.Contains(e.Error, tt.want) || strings.Contains(e.Error, "were imported") {
				t.Fatalf("import: %d %.300s, want %d naming %s", r.status, r.body, tt.status, tt.want)
			}
			if h.current.Load() != before {
				t.Error("a refused import published a view")
			}
			var page tokenList
			routeCall(t, "GET", "/ip-allowlist/tokens", "").json(t, &page)
			if len(page.Tokens) != 1 || page.Tokens[0].Label != "stored" {
				t.Errorf("after a refused import the store holds %d entries (a page's), want only \"stored\"", len(page.Tokens))
			}
			if got := routeCall(t, "GET", "/ip-allowlist/tokens/stored", "").header.Get("ETag"); got != etag {
				t.Errorf("the stored entry changed: ETag %s, was %s", got, etag)
			}
		})
	}
}

// changingFile is a tokens file that reads first, then, from its start
// again, then: a file changed between an import's two passes.
type changingFile struct {
	first, then string
	reads       int
	r           *strings.Reader
}

func (c *changingFile) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *changingFile) Seek(off int64, whence int) (int64, error) {
	if off != 0 || whence == io.SeekEnd {
		return 0, errors.New("only a seek to the start")
	}
	if whence == io.SeekStart {
		if c.reads++; c.reads == 1 {
			c.r = strings.NewReader(c.first)
		} else {
			c.r = strings.NewReader(c.then)
		}
	}
	return 0, nil
}

// The second pass of an import, which writes, must read what the first
// checked: a tokens file changed in between is refused, and nothing of
// it kept.
func TestStoreImportOfAFileChangedMeanwhileKeepsNothing(t *testing.T) {
	entry := func(label, allow string) string {
		return fmt.Sprintf(`%q: {"token_sha256": %q, "allow": [%q]}`, label, testkit.Digest("changing-"+label), allow)
	}
	checked := "{" + entry("a", "198.51.100.1") + "," + entry("b", "198.51.100.2") + "}"
	for _, tt := range []struct{ name, then string }{
		{"a record fewer", "{" + entry("a", "198.51.100.1") + "}"},
		{"a record more", "{" + entry("a", "198.51.100.1") + "," + entry("b", "198.51.100.2") + "," + entry("c", "198.51.100.3") + "}"},
		{"a record changed", "{" + entry("a", "198.51.100.1") + "," + entry("b", "0.0.0.0/0") + "}"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := storeHandler(t, "")
			_, err := h.fileStore.importStream(&changingFile{first: checked, then: tt.then}, audit{action: "import", source: "cli"})
			if err == nil || !strings.Contains(err.Error(), "changed while it was imported") {
				t.Fatalf("import: %v, want it refused as changed", err)
			}
			var page tokenList
			routeCall(t, "GET", "/ip-allowlist/tokens", "").json(t, &page)
			if len(page.Tokens) != 0 {
				t.Errorf("the store holds %d entries, want none", len(page.Tokens))
			}
		})
	}
}
