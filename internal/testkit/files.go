package testkit

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// WriteFile writes body to path (mode 0600) and returns path, failing t on
// an error. It writes a temporary file beside path and renames it over
// path, as a deploy tool should, so a watcher never reads half a file.
func WriteFile(t testing.TB, path, body string) string {
	t.Helper()
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		t.Fatal(err)
	}
	_, err = tmp.WriteString(body)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		t.Fatal(err)
	}
	return path
}

// Entry is one entry of a generated tokens file.
type Entry struct {
	Label string
	Token string   // written as its digest, token_sha256
	Allow []string // the allow list, as written
	Owner string   // the owner, for a store's import; "" writes none
}

// WriteTokens writes a tokens file of n entries to path, entry(i) for
// each i, tokens by digest. It streams, so a file of a million tokens is
// never held in memory whole.
func WriteTokens(path string, n int, entry func(i int) Entry) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	enc := json.NewEncoder(w) // each value ends in a newline
	w.WriteString("{\n")
	for i := range n {
		e := entry(i)
		if i > 0 {
			w.WriteString(",")
		}
		label, _ := json.Marshal(e.Label)
		w.Write(label)
		w.WriteString(": ")
		if err := enc.Encode(struct {
			TokenSHA256 string   `json:"token_sha256"`
			Allow       []string `json:"allow"`
			Owner       string   `json:"owner,omitempty"`
		}{Digest(e.Token), e.Allow, e.Owner}); err != nil {
			f.Close()
			return err
		}
	}
	w.WriteString("}\n")
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// TokensFile is WriteTokens into tokens.json in a temporary folder of t's,
// and returns the file's path.
func TokensFile(t testing.TB, n int, entry func(i int) Entry) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens.json")
	if err := WriteTokens(path, n, entry); err != nil {
		t.Fatal(err)
	}
	return path
}
