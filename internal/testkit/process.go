package testkit

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"time"
)

// Process is a started command, waited for in the background so that
// whether it is still running can be asked at any time.
type Process struct {
	Cmd  *exec.Cmd
	done chan struct{}
}

// StartProcess starts cmd. The caller stops it, with Stop or WaitOrKill.
func StartProcess(cmd *exec.Cmd) (*Process, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{Cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// Running reports whether the process has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop interrupts the process (SIGINT, which Caddy takes as a graceful
// stop) and waits for it to exit, killing it after 10 s.
func (p *Process) Stop() {
	if p.Running() {
		_ = p.Cmd.Process.Signal(os.Interrupt)
	}
	p.WaitOrKill(10 * time.Second)
}

// WaitOrKill waits up to d for the process to exit, then kills it; it
// returns once the process has exited.
func (p *Process) WaitOrKill(d time.Duration) {
	select {
	case <-p.done:
	case <-time.After(d):
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
}

var errExited = errors.New("exited while starting")

// WaitListening waits up to timeout for addr to accept a TCP connection,
// and fails at once if the process exits meanwhile.
func (p *Process) WaitListening(addr string, timeout time.Duration) error {
	_, ok := Wait(timeout, func() bool {
		if !p.Running() {
			return true
		}
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	})
	switch {
	case !p.Running():
		return errExited
	case !ok:
		return fmt.Errorf("did not start listening on %s within %v", addr, timeout)
	}
	return nil
}
