package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// minioServer is a MinIO server the benchmark started.
type minioServer struct {
	endpoint, accessKey, secretKey string
	cmd                            *exec.Cmd
	done                           chan struct{}
}

// minioBinary returns the MinIO server binary: $FERRY_TEST_MINIO_BIN, or
// the one scripts/tools.sh installs in the tools cache.
func minioBinary() string {
	if p := os.Getenv("FERRY_TEST_MINIO_BIN"); p != "" {
		return p
	}
	tools := os.Getenv("FERRY_TOOLS_DIR")
	if tools == "" {
		cache := os.Getenv("XDG_CACHE_HOME")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache")
		}
		tools = filepath.Join(cache, "ferry", "tools")
	}
	return filepath.Join(tools, "bin", "minio")
}

// startMinIO starts MinIO on a free loopback port with its data under dir
// and waits until it is healthy.
func startMinIO(ctx context.Context, dir string) (*minioServer, error) {
	bin := minioBinary()
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("MinIO server not found at %s (run bash scripts/tools.sh, set FERRY_TEST_MINIO_BIN, or give -endpoint): %w", bin, err)
	}
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		m := &minioServer{
			endpoint:  fmt.Sprintf("127.0.0.1:%d", port),
			accessKey: "ferrybench",
			secretKey: hex.EncodeToString(secret),
			done:      make(chan struct{}),
		}
		logf, err := os.Create(filepath.Join(dir, "minio.log"))
		if err != nil {
			return nil, err
		}
		m.cmd = exec.Command(bin, "server", filepath.Join(dir, "minio"), "--address", m.endpoint, "--quiet")
		m.cmd.Env = append(os.Environ(),
			"MINIO_ROOT_USER="+m.accessKey, "MINIO_ROOT_PASSWORD="+m.secretKey,
			"MINIO_BROWSER=off", "MINIO_UPDATE=off")
		m.cmd.Stdout, m.cmd.Stderr = logf, logf
		m.cmd.SysProcAttr = childProcAttr()
		if err := m.cmd.Start(); err != nil {
			logf.Close()
			return nil, fmt.Errorf("start MinIO: %w", err)
		}
		go func() { _ = m.cmd.Wait(); logf.Close(); close(m.done) }()
		log.Printf("MinIO on %s (pid %d)", m.endpoint, m.cmd.Process.Pid)
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-m.done:
			case <-ctx.Done():
				m.stop()
				return nil, ctx.Err()
			case <-time.After(100 * time.Millisecond):
				resp, err := http.Get("http://" + m.endpoint + "/minio/health/live")
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						return m, nil
					}
				}
				continue
			}
			break // exited: the port was taken, try another
		}
		m.stop()
		_ = os.RemoveAll(filepath.Join(dir, "minio"))
	}
	b, _ := os.ReadFile(filepath.Join(dir, "minio.log"))
	return nil, fmt.Errorf("MinIO did not become healthy:\n%s", b)
}

func (m *minioServer) stop() {
	select {
	case <-m.done:
		return
	default:
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
}

// ferryServer is a running `ferry serve` on the benchmark's bucket.
type ferryServer struct {
	url  string
	cmd  *exec.Cmd
	logs *os.File
	done chan struct{}
	err  error
}

var listenAddr = regexp.MustCompile(`msg=listening.*\baddr="?([^\s"]+:\d+)"?`)

// startFerry starts `ferry serve` in front of bucket, with the extra
// server flags of cfg, logging to dir/ferry-NAME.log.
func startFerry(ctx context.Context, cfg *config, bucket, dir, name string) (*ferryServer, error) {
	args := append([]string{"serve", "--addr", "127.0.0.1:0",
		"--s3-endpoint", cfg.endpoint, "--s3-insecure", "--s3-bucket", bucket,
		"--s3-access-key", cfg.accessKey, "--s3-secret-key", cfg.secretKey,
		"--log-level", "info",
	}, cfg.serverArgs...)
	logs, err := os.Create(filepath.Join(dir, "ferry-"+name+".log"))
	if err != nil {
		return nil, err
	}
	s := &ferryServer{logs: logs, done: make(chan struct{})}
	s.cmd = exec.Command(cfg.ferryBin, args...)
	s.cmd.Env = os.Environ()
	s.cmd.SysProcAttr = childProcAttr()
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	s.cmd.Stdout = logs
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start ferry serve: %w", err)
	}
	addr := make(chan string, 1)
	go func() {
		r := bufio.NewReader(stderr)
		found := false
		for {
			line, err := r.ReadString('\n')
			_, _ = io.WriteString(logs, line)
			if m := listenAddr.FindStringSubmatch(line); m != nil && !found {
				found = true
				addr <- m[1]
			}
			if err != nil {
				break
			}
		}
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	select {
	case a := <-addr:
		s.url = "http://" + a
		log.Printf("ferry serve on %s (pid %d)", a, s.cmd.Process.Pid)
		return s, nil
	case <-s.done:
		b, _ := os.ReadFile(logs.Name())
		return nil, fmt.Errorf("ferry serve exited before listening: %v\n%s", s.err, b)
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	return nil, errors.New("ferry serve did not start listening within 30 s")
}

// stop ends the server with SIGTERM and reports an unclean exit.
func (s *ferryServer) stop() error {
	select {
	case <-s.done:
		return fmt.Errorf("ferry serve exited early: %v (logs: %s)", s.err, s.logs.Name())
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.logs.Close()
	if s.err != nil {
		b, _ := os.ReadFile(s.logs.Name())
		return fmt.Errorf("ferry serve did not exit cleanly: %v\n%s", s.err, tail(b, 4096))
	}
	return nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// procStat is what /proc says about a process.
type procStat struct {
	peakRSS int64   // VmHWM, bytes
	cpu     float64 // utime+stime, seconds
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// stat reads the server's peak RSS and CPU time; zeros where /proc is
// missing (not Linux).
func (s *ferryServer) stat() procStat {
	var st procStat
	pid := s.cmd.Process.Pid
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
				st.peakRSS = kb << 10
			}
		}
	}
	st.cpu = procCPU(pid)
	return st
}

// resetPeak resets the server's peak RSS to its current RSS (Linux:
// writing 5 to /proc/PID/clear_refs), so the next stat reports the peak of
// what happens in between.
func (s *ferryServer) resetPeak() {
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", s.cmd.Process.Pid), []byte("5"), 0)
}

// procCPU returns the user+system CPU seconds process pid has used, from
// /proc/PID/stat; 0 where /proc is missing (not Linux).
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may
	// contain spaces: state is field 3, utime 14, stime 15.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) <= 12 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return float64(ut+stime) / clockTicks
}

// selfCPU returns the user+system CPU seconds this process (the benchmark
// and the clients it runs) has used; 0 where getrusage fails.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
