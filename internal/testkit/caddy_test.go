package testkit

import (
	"net"
	"testing"
)

// settle relies on listening; it must see a socket that listens, and stop
// seeing it once closed.
func TestListeningCountsSockets(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	if n := listening(t, url); n != 1 {
		t.Errorf("listening(%s) = %d with one listener, want 1", url, n)
	}
	l.Close()
	if n := listening(t, url); n != 0 {
		t.Errorf("listening(%s) = %d after closing, want 0", url, n)
	}
}
