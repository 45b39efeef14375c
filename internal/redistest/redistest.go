// Package redistest runs a real redis-server on loopback for tests and
// benchmarks: a free port, its own folder, persistence to that folder so
// it can be stopped and started again with its data, and stopped with the
// test.
package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
	"github.com/redis/go-redis/v9"
)

// Server is one redis-server process, restartable on the same port.
type Server struct {
	Addr string // 127.0.0.1:port
	args []string
	dir  string
	proc *testkit.Process // nil while stopped
	log  *os.File
}

// New starts a server for t, stopped when t ends, with extra arguments for
// redis-server (such as --requirepass). Without redis-server on the PATH
// the test is skipped, or fails when CI is set (make test installs it).
func New(t testing.TB, args ...string) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		testkit.Unavailable(t, "redis-server is not installed (make test installs it)")
	}
	s, err := Start(t.TempDir(), args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}

// Start runs redis-server on a free loopback port, keeping its data and
// log in dir, with extra arguments args.
func Start(dir string, args ...string) (*Server, error) {
	addr, err := testkit.FreeAddr()
	if err != nil {
		return nil, err
	}
	s := &Server{Addr: addr, dir: dir, args: args}
	return s, s.Start()
}

// Start starts the server again after Stop, with the data it saved.
func (s *Server) Start() error {
	_, port, _ := net.SplitHostPort(s.Addr)
	log, err := os.OpenFile(filepath.Join(s.dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	s.log = log
	cmd := exec.Command("redis-server",
		"--bind", "127.0.0.1", "--port", port, "--dir", s.dir,
		"--save", "", "--appendonly", "no", "--dbfilename", "dump.rdb",
		"--protected-mode", "yes", "--daemonize", "no", "--loglevel", "warning")
	cmd.Args = append(cmd.Args, s.args...)
	cmd.Stdout, cmd.Stderr = log, log
	if s.proc, err = testkit.StartProcess(cmd); err != nil {
		log.Close()
		return err
	}
	c := s.Client()
	defer c.Close()
	answering := false
	testkit.Wait(10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		// NOAUTH: answering, with a password set.
		answering = err == nil || strings.HasPrefix(err.Error(), "NOAUTH")
		return answering || !s.proc.Running()
	})
	switch {
	case answering:
		return nil
	case !s.proc.Running():
		b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
		return fmt.Errorf("redis-server exited: %s", b)
	}
	s.Stop()
	return errors.New("redis-server did not answer PING within 10s")
}

// Stop saves the data (so Start brings it back) and stops the server.
func (s *Server) Stop() {
	if s.proc == nil {
		return
	}
	if s.proc.Running() {
		c := s.Client()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = c.ShutdownSave(ctx).Err() // the connection drops: an error is expected
		cancel()
		c.Close()
		s.proc.WaitOrKill(10 * time.Second)
	}
	s.log.Close()
	s.proc = nil
}

// Kill stops the server at once (SIGKILL), saving nothing: Start brings
// back what it saved last (SAVE).
func (s *Server) Kill() {
	if s.proc == nil {
		return
	}
	_ = s.proc.Cmd.Process.Kill()
	s.proc.WaitOrKill(10 * time.Second)
	s.log.Close()
	s.proc = nil
}

// Client returns a client of the server; the caller closes it.
func (s *Server) Client() *redis.Client {
	var password string
	for i, a := range s.args {
		if a == "--requirepass" && i+1 < len(s.args) {
			password = s.args[i+1]
		}
	}
	return redis.NewClient(&redis.Options{Addr: s.Addr, Password: password, Protocol: 2, DisableIdentity: true, MaxRetries: -1})
}

// Elsewhere runs fn against the server's data while the server is
// stopped: on another free port, saved again afterwards, so the next Start
// brings back what fn wrote. It models a change made while the clients of
// Addr cannot reach Redis.
func (s *Server) Elsewhere(fn func(addr string) error) error {
	if s.proc != nil {
		return errors.New("redistest: Elsewhere needs a stopped server")
	}
	addr, err := testkit.FreeAddr()
	if err != nil {
		return err
	}
	other := &Server{Addr: addr, dir: s.dir, args: s.args}
	if err := other.Start(); err != nil {
		return err
	}
	defer other.Stop()
	return fn(other.Addr)
}
