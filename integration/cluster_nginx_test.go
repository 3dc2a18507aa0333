package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// nginxConfFiles are the files of scripts/nginx that nginx is run with,
// byte for byte: the configuration docs/deploy.md documents.
var nginxConfFiles = []string{"ferry.conf", "ferry-proxy.conf"}

// nginxProxy is nginx from Debian in front of ferry servers, run
// unprivileged with everything under a prefix of its own: the
// configuration in scripts/nginx, with this test's addresses in the three
// files it includes.
type nginxProxy struct {
	prefix string
	// httpURL is the HTTP/1.1 listener (Connect, gRPC-Web); h2cURL the
	// plaintext HTTP/2 one (gRPC, and Connect and gRPC-Web over HTTP/2).
	httpURL, h2cURL string
	cmd             *exec.Cmd
	done            chan struct{}
	logs            *lockedBuffer
}

// nginxLogFormat is the access log's format: one line per request, fields
// separated by "|": the request's URI, status, bytes read from the client
// (request line, headers and body), bytes sent, the instances it went to
// and their statuses (", "-separated when nginx went on to the next
// instance), the protocol and the seconds it took.
const nginxLogFormat = `$request_uri|$status|$request_length|$bytes_sent|$upstream_addr|$upstream_status|$server_protocol|$request_time`

// requireNginx returns the path of nginx (FERRY_TEST_NGINX, default
// /usr/sbin/nginx, which scripts/nginx.sh installs from Debian). Without it
// the test is skipped, or fails when FERRY_REQUIRE_S3=1.
func requireNginx(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("FERRY_TEST_NGINX")
	if bin == "" {
		bin = "/usr/sbin/nginx"
	}
	if !fileExists(bin) {
		msg := "nginx not found at " + bin + " (FERRY_TEST_NGINX): run bash scripts/nginx.sh"
		if os.Getenv("FERRY_REQUIRE_S3") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return bin
}

// startNginx starts nginx in front of the ferry servers at upstreams
// (host:port each) and waits until both listeners answer a health check
// through it; it stops nginx when the test ends.
func startNginx(t testing.TB, upstreams []string) *nginxProxy {
	t.Helper()
	bin := requireNginx(t)
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	p := &nginxProxy{prefix: t.TempDir(), logs: &lockedBuffer{}}
	for _, d := range []string{"tmp", "logs"} {
		if err := os.Mkdir(filepath.Join(p.prefix, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range nginxConfFiles {
		b, err := os.ReadFile(filepath.Join(root, "scripts", "nginx", name))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(p.prefix, name), string(b))
	}
	var ups strings.Builder
	for _, u := range upstreams {
		fmt.Fprintf(&ups, "server %s max_fails=2 fail_timeout=5s;\n", u)
	}
	writeFile(t, filepath.Join(p.prefix, "ferry-upstreams.conf"), ups.String())
	// The wrapper: what a packaged nginx.conf has around conf.d/*.conf,
	// with every path under the prefix.
	writeFile(t, filepath.Join(p.prefix, "nginx.conf"), fmt.Sprintf(`
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log info;
worker_processes 2;
events { worker_connections 4096; }
http {
    log_format ferry '%[2]s';
    access_log %[1]s/logs/access.log ferry;
    client_body_temp_path %[1]s/tmp/body;
    proxy_temp_path %[1]s/tmp/proxy;
    fastcgi_temp_path %[1]s/tmp/fastcgi;
    uwsgi_temp_path %[1]s/tmp/uwsgi;
    scgi_temp_path %[1]s/tmp/scgi;
    include ferry.conf;
}
`, p.prefix, nginxLogFormat))

	// nginx exits at once when a port is taken: try other ports then.
	var lastErr error
	for range 5 {
		httpAddr, h2cAddr := freeLoopbackAddr(t), freeLoopbackAddr(t)
		writeFile(t, filepath.Join(p.prefix, "ferry-listen-http.conf"), "listen "+httpAddr+";\n")
		writeFile(t, filepath.Join(p.prefix, "ferry-listen-h2c.conf"), "listen "+h2cAddr+" http2;\n")
		p.httpURL, p.h2cURL = "http://"+httpAddr, "http://"+h2cAddr
		if lastErr = p.spawn(bin); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("start nginx: %v\n%s", lastErr, p.errorLog())
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(serverStopTimeout):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("nginx error log:\n%s\n%s", p.errorLog(), p.logs)
		}
	})
	return p
}

// spawn starts nginx and waits until both of its listeners pass a health
// check through to a ferry server: Connect over HTTP/1.1, gRPC over h2c.
func (p *nginxProxy) spawn(bin string) error {
	conf := filepath.Join(p.prefix, "nginx.conf")
	check := exec.Command(bin, "-t", "-q", "-p", p.prefix, "-e", filepath.Join(p.prefix, "logs", "error.log"), "-c", conf, "-g", "daemon off;")
	if out, err := check.CombinedOutput(); err != nil {
		return fmt.Errorf("nginx -t: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-p", p.prefix, "-e", filepath.Join(p.prefix, "logs", "error.log"), "-c", conf, "-g", "daemon off;")
	cmd.SysProcAttr = childProcAttr()
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	p.cmd, p.done = cmd, done
	deadline := time.Now().Add(serverStartTimeout)
	for {
		select {
		case <-done:
			return fmt.Errorf("nginx exited: %v", cmd.ProcessState)
		default:
		}
		err := p.healthy(context.Background())
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("no health check passed through nginx within %v: %v", serverStartTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// healthy checks the health of the ferry service through both listeners,
// the ways docs/deploy.md gives a load balancer: the Connect form of
// grpc.health.v1.Health/Check over HTTP/1.1 (a POST of JSON {}), and the
// gRPC form over h2c, with grpc-go's health client.
func (p *nginxProxy) healthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.httpURL+"/grpc.health.v1.Health/Check", strings.NewReader(`{"service":"ferry.v1.UploadService"}`))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := httpClient("connect").Do(req)
	if err != nil {
		return err
	}
	var body bytes.Buffer
	_, _ = body.ReadFrom(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(body.String(), "SERVING") {
		return fmt.Errorf("HTTP health check: %s %s", res.Status, body.String())
	}
	conn, err := grpc.NewClient(strings.TrimPrefix(p.h2cURL, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "ferry.v1.DownloadService"})
	if err != nil {
		return fmt.Errorf("gRPC health check: %w", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("gRPC health check: %v", resp.GetStatus())
	}
	return nil
}

// errorLog returns nginx's error log.
func (p *nginxProxy) errorLog() string {
	b, _ := os.ReadFile(filepath.Join(p.prefix, "logs", "error.log"))
	return string(b)
}

// nginxRequest is one line of the access log (nginxLogFormat).
type nginxRequest struct {
	uri            string
	status         int
	requestLength  int64
	upstreams      []string // instances tried, in order
	upstreamStatus []string
	protocol       string
}

// accessLog reads the access log so far.
func (p *nginxProxy) accessLog(t testing.TB) []nginxRequest {
	t.Helper()
	f, err := os.Open(filepath.Join(p.prefix, "logs", "access.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []nginxRequest
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), "|")
		if len(fields) != 8 {
			t.Fatalf("access log line %q: want 8 fields", sc.Text())
		}
		status, _ := strconv.Atoi(fields[1])
		n, _ := strconv.ParseInt(fields[2], 10, 64)
		split := func(s string) []string {
			var out []string
			for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
				if f != ":" && f != "-" {
					out = append(out, f)
				}
			}
			return out
		}
		out = append(out, nginxRequest{
			uri:            fields[0],
			status:         status,
			requestLength:  n,
			upstreams:      split(fields[4]),
			upstreamStatus: split(fields[5]),
			protocol:       fields[6],
		})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// writeFile writes s to path, failing the test on error.
func writeFile(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDeployDocShowsNginxConfig: docs/deploy.md shows the nginx
// configuration the cluster tests run, as it is in scripts/nginx.
func TestDeployDocShowsNginxConfig(t *testing.T) {
	t.Parallel()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "deploy.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range nginxConfFiles {
		b, err := os.ReadFile(filepath.Join(root, "scripts", "nginx", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(doc, []byte("```nginx\n"+string(b)+"```\n")) {
			t.Errorf("docs/deploy.md does not show scripts/nginx/%s as it is: copy the file into its nginx block", name)
		}
	}
}
