package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// The one place child processes start: this test binary re-run as a crash
// child (TestMain dispatches on the environment variable), or the built
// seller. Each child prints lines on stdout that the test waits for, and is
// killed with SIGKILL when the test says so.

// selfCommand returns the command that runs this test binary as a child
// with env=value set and no tests of its own.
func selfCommand(env, value string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env+"="+value)
	return cmd
}

// child is a running child process.
type child struct {
	cmd    *exec.Cmd
	lines  chan string
	seen   []string
	stderr syncBuffer
}

// startChild starts cmd and collects its stdout lines; its stderr is kept
// for error messages.
func startChild(cmd *exec.Cmd) (*child, error) {
	c := &child{cmd: cmd, lines: make(chan string, 256)}
	c.cmd.Stderr = &c.stderr
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	return c, nil
}

// waitLine reads the child's lines until one starts with prefix.
func (c *child) waitLine(prefix string, timeout time.Duration) (string, error) {
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				return "", fmt.Errorf("child exited before printing %q; it printed %q; stderr: %s", prefix, c.seen, c.stderr.String())
			}
			c.seen = append(c.seen, line)
			if strings.HasPrefix(line, prefix) {
				return line, nil
			}
		case <-deadline:
			return "", fmt.Errorf("child did not print %q within %v; it printed %q", prefix, timeout, c.seen)
		}
	}
}

// kill sends SIGKILL, reaps the child and returns every line it printed.
func (c *child) kill() []string {
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
	for line := range c.lines {
		c.seen = append(c.seen, line)
	}
	return c.seen
}

// syncBuffer is a bytes.Buffer that a process (or a logger) writes while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}
func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }
func (b *syncBuffer) Reset()         { b.mu.Lock(); b.b.Reset(); b.mu.Unlock() }
