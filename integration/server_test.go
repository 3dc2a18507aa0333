package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// serverStartTimeout bounds how long a ferry server may take to log
	// the address it listens on.
	serverStartTimeout = 30 * time.Second
	// serverStopTimeout bounds a graceful shutdown after SIGTERM.
	serverStopTimeout = 15 * time.Second
	// cliTimeout bounds one run of the ferry CLI; the largest transfer in
	// these tests (200 MiB) takes seconds.
	cliTimeout = 5 * time.Minute
)

// server is one running `ferry serve` process.
type server struct {
	// addr is the host:port the server listens on.
	addr string
	// url is the base URL clients use: http://addr.
	url  string
	cmd  *exec.Cmd
	logs *lockedBuffer
	done chan struct{} // closed when the process has exited
	err  error         // the process's exit error, set before done closes
	once sync.Once     // stops the process once
}

// lockedBuffer is a bytes.Buffer safe for concurrent use: the server's
// output is written by its pipe readers and read by the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// listenAddr finds the address in the server's "listening" log line, written
// by log/slog with either the text handler (msg=listening addr=HOST:PORT) or
// the JSON handler ("msg":"listening","addr":"HOST:PORT").
func listenAddr(line string) (string, bool) {
	if !strings.Contains(line, "listening") {
		return "", false
	}
	var rec struct {
		Msg  string `json:"msg"`
		Addr string `json:"addr"`
	}
	if json.Unmarshal([]byte(line), &rec) == nil && rec.Addr != "" {
		return rec.Addr, true
	}
	m := textAddr.FindStringSubmatch(line)
	if m == nil {
		return "", false
	}
	return m[1], true
}

var textAddr = regexp.MustCompile(`\baddr="?([^\s"]+:\d+)"?`)

// startServer starts `ferry serve --addr 127.0.0.1:0 ARGS...`, waits until it
// logs the address it listens on, and stops it with SIGTERM when the test
// ends, failing the test unless it then exits cleanly.
func startServer(t testing.TB, args ...string) *server {
	t.Helper()
	s, err := spawnServer("127.0.0.1:0", args)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(t) })
	return s
}

// spawnServer starts `ferry serve --addr addr args...` and waits until
// it logs its address. It returns errors rather than failing a test, so a
// goroutine may call it.
func spawnServer(addr string, args []string) (*server, error) {
	return spawnWrappedServer(nil, addr, args)
}

// spawnWrappedServer is spawnServer with the command line of ferry serve
// given to the command wrap (nil: none), which must end by executing it in
// its own process, so that the server's PID is the process started here
// (as `unshare ... sh -c '...; exec "$@"'` does).
func spawnWrappedServer(wrap []string, addr string, args []string) (*server, error) {
	argv := append(append(slices.Clip(wrap), ferryBin, "serve", "--addr", addr), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = childProcAttr()
	s := &server{cmd: cmd, logs: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout = s.logs
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start ferry serve: %w", err)
	}
	addrc := make(chan string, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		r := bufio.NewReader(stderr)
		found := false
		for {
			line, err := r.ReadString('\n')
			s.logs.Write([]byte(line))
			if !found {
				if a, ok := listenAddr(line); ok {
					found = true
					addrc <- a
				}
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		<-copied
		s.err = cmd.Wait()
		close(s.done)
	}()
	select {
	case s.addr = <-addrc:
		s.url = "http://" + s.addr
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("ferry serve --addr %s exited before listening: %v\n%s", addr, s.err, s.logs)
	case <-time.After(serverStartTimeout):
		_ = cmd.Process.Kill()
		<-s.done
		return nil, fmt.Errorf("ferry serve logged no listening address within %v:\n%s", serverStartTimeout, s.logs)
	}
}

// Stop sends SIGTERM and waits for a graceful exit (status 0), failing the
// test otherwise. Only the first call does anything; the test's cleanup
// calls it too.
func (s *server) Stop(t testing.TB) {
	s.once.Do(func() { s.stop(t) })
}

func (s *server) stop(t testing.TB) {
	select {
	case <-s.done:
		t.Errorf("ferry serve exited before the test ended: %v\n%s", s.err, s.logs)
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		if s.err != nil {
			t.Errorf("ferry serve did not exit cleanly on SIGTERM: %v\n%s", s.err, s.logs)
		}
	case <-time.After(serverStopTimeout):
		_ = s.cmd.Process.Kill()
		<-s.done
		t.Errorf("ferry serve did not stop within %v of SIGTERM\n%s", serverStopTimeout, s.logs)
	}
	if t.Failed() {
		t.Logf("ferry serve logs:\n%s", s.logs)
	}
}

// cliResult is the outcome of one run of the ferry CLI.
type cliResult struct {
	stdout, stderr string
	// err is nil when the CLI exited 0.
	err error
}

// ferry runs the ferry CLI with args and returns what it printed.
func ferry(t testing.TB, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, ferryBin, args...)
	cmd.Env = cliEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		err = errors.Join(err, ctx.Err())
	}
	return cliResult{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// mustFerry runs the ferry CLI and fails the test unless it exits 0.
func mustFerry(t testing.TB, args ...string) cliResult {
	t.Helper()
	r := ferry(t, args...)
	if r.err != nil {
		t.Fatalf("ferry %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.err, r.stdout, r.stderr)
	}
	return r
}

// cliEnv is the environment of the CLI: the test's, less any FERRY_*
// client settings of the person running the tests, so every run depends
// only on its flags.
func cliEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "FERRY_") && !strings.HasPrefix(kv, "FERRY_TEST_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}
