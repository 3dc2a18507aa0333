package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sync/errgroup"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/store"
	"github.com/ferryhq/ferry/upload"
)

// syncBuffer is a bytes.Buffer safe for one writer and one reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// env is an environment for run: the variables given, nothing else.
func env(vars ...string) lookupEnvFunc {
	m := map[string]string{}
	for i := 0; i+1 < len(vars); i += 2 {
		m[vars[i]] = vars[i+1]
	}
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// result is what one run of the command did.
type result struct {
	code        int
	stdout      string
	stderr      string
	stdoutBytes []byte
}

// ferry runs the command line args with stdin and returns what it did.
func ferry(t *testing.T, stdin []byte, lookupEnv lookupEnvFunc, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, stdio{in: bytes.NewReader(stdin), out: &out, err: &errOut}, lookupEnv)
	return result{code: code, stdout: out.String(), stderr: errOut.String(), stdoutBytes: out.Bytes()}
}

var listeningAddr = regexp.MustCompile(`msg=listening addr=(\S+)`)

// startServer runs `ferry serve` on a free port with a disk store in a
// temporary directory and returns its URL. The server stops, gracefully,
// when the test ends; the test fails unless it exits with status 0.
func startServer(t *testing.T, extra ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	args := append([]string{"serve", "--addr", "127.0.0.1:0", "--data", t.TempDir(), "--chunk-size", "5MiB"}, extra...)
	exited := make(chan int, 1)
	go func() { exited <- run(ctx, args, stdio{in: strings.NewReader(""), out: logs, err: logs}, env()) }()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-exited:
			if code != exitOK {
				t.Errorf("ferry serve exited with status %d; logs:\n%s", code, logs)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("ferry serve did not stop within 10 s of SIGTERM")
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := listeningAddr.FindStringSubmatch(logs.String()); m != nil {
			return "http://" + m[1]
		}
		select {
		case code := <-exited:
			t.Fatalf("ferry serve exited with status %d; logs:\n%s", code, logs)
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("ferry serve did not log its address; logs:\n%s", logs)
	return ""
}

func randomBytes(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 3))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// TestTransfer uploads and downloads files and standard input with each
// protocol through `ferry serve`, and lists, stats and removes them.
func TestTransfer(t *testing.T) {
	t.Parallel()
	url := startServer(t)
	dir := t.TempDir()
	data := randomBytes(1, 11<<20+3) // three chunks of 5 MiB
	file := filepath.Join(dir, "data.bin")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, protocol := range []string{"connect", "grpc", "grpcweb"} {
		t.Run(protocol, func(t *testing.T) {
			t.Parallel()
			e := env("FERRY_SERVER", url, "FERRY_PROTOCOL", protocol)
			key := "files/" + protocol + ".bin"
			want := fmt.Sprintf("key=%q size=%d crc32c=", key, len(data))
			if r := ferry(t, nil, e, "upload", "--concurrency", "3", file, key); r.code != 0 || !strings.HasPrefix(r.stdout, want) {
				t.Fatalf("upload: status %d, stdout %q, stderr %q; want status 0, %q", r.code, r.stdout, r.stderr, want+"...")
			}
			out := filepath.Join(dir, protocol+".out")
			if r := ferry(t, nil, e, "download", key, out); r.code != 0 {
				t.Fatalf("download: status %d, stderr %q", r.code, r.stderr)
			}
			if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, data) {
				t.Errorf("downloaded file: %d bytes that differ from the %d uploaded (%v)", len(got), len(data), err)
			}
			if _, err := os.Stat(out + partSuffix); !os.IsNotExist(err) {
				t.Errorf("the part file is left behind: %v", err)
			}

			// A prefix of its own: "stdin/grpc" would also list "stdin/grpcweb".
			stdinKey := "stdin/" + protocol + "/obj"
			small := data[:6<<20+1]
			if r := ferry(t, small, e, "upload", "--quiet", "-", stdinKey); r.code != 0 {
				t.Fatalf("upload -: status %d, stderr %q", r.code, r.stderr)
			}
			if r := ferry(t, nil, e, "download", "--quiet", stdinKey, "-"); r.code != 0 || !bytes.Equal(r.stdoutBytes, small) {
				t.Fatalf("download -: status %d, %d bytes on stdout, stderr %q", r.code, len(r.stdoutBytes), r.stderr)
			}

			if r := ferry(t, nil, e, "stat", key); r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("size: %d\n", len(data))) {
				t.Errorf("stat: status %d, stdout %q", r.code, r.stdout)
			}
			if r := ferry(t, nil, e, "ls", "stdin/"+protocol+"/"); r.code != 0 || !strings.HasSuffix(r.stdout, " "+stdinKey+"\n") || strings.Count(r.stdout, "\n") != 1 {
				t.Errorf("ls: status %d, stdout %q", r.code, r.stdout)
			}
			if r := ferry(t, nil, e, "rm", stdinKey); r.code != 0 {
				t.Errorf("rm: status %d, stderr %q", r.code, r.stderr)
			}
			if r := ferry(t, nil, e, "stat", stdinKey); r.code != exitError || !strings.Contains(r.stderr, "not_found") {
				t.Errorf("stat of a removed key: status %d, stderr %q; want 1 and not_found", r.code, r.stderr)
			}
		})
	}
}

// TestResume resumes an upload that stopped after its first chunk, and a
// download that stopped partway.
func TestResume(t *testing.T) {
	t.Parallel()
	url := startServer(t)
	ctx := context.Background()
	e := env("FERRY_SERVER", url, "FERRY_PROTOCOL", "grpcweb")
	dir := t.TempDir()
	data := randomBytes(2, 10<<20+1)
	file := filepath.Join(dir, "data.bin")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}

	client := ferryv1connect.NewUploadServiceClient(http.DefaultClient, url)
	size := int64(len(data))
	created, err := client.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: "k", Size: &size, ChunkSize: 5 << 20}}))
	if err != nil {
		t.Fatal(err)
	}
	id := created.Msg.GetUpload().GetUploadId()
	crc := store.CRC32C(data[:5<<20])
	if _, err := client.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: &ferryv1.Chunk{Index: 0, Data: data[:5<<20], Crc32C: &crc}})); err != nil {
		t.Fatal(err)
	}
	if r := ferry(t, nil, e, "upload", "--resume", id, file, "other"); r.code != exitUsage || !strings.Contains(r.stderr, `writes the key "k"`) {
		t.Errorf("resume with another key: status %d, stderr %q; want a usage error", r.code, r.stderr)
	}
	if r := ferry(t, nil, e, "upload", "--resume", id, file, "k"); r.code != 0 || !strings.HasPrefix(r.stdout, fmt.Sprintf("key=\"k\" size=%d ", len(data))) {
		t.Fatalf("upload --resume: status %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	out := filepath.Join(dir, "out")
	if err := os.WriteFile(out+partSuffix, data[:3<<20], 0o600); err != nil {
		t.Fatal(err)
	}
	if r := ferry(t, nil, e, "download", "--resume", "k", out); r.code != 0 {
		t.Fatalf("download --resume: status %d, stderr %q", r.code, r.stderr)
	}
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, data) {
		t.Errorf("resumed download: %d bytes that differ from the %d uploaded (%v)", len(got), len(data), err)
	}

	// A part file that is not the object's start is found out by the
	// CRC32C and removed.
	if err := os.WriteFile(out+partSuffix, make([]byte, 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := ferry(t, nil, e, "download", "--resume", "k", out); r.code != exitError || !strings.Contains(r.stderr, "checksum") {
		t.Errorf("download --resume of a wrong part file: status %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(out + partSuffix); !os.IsNotExist(err) {
		t.Errorf("the wrong part file is left behind: %v", err)
	}
}

// TestListPages lists more objects than one page holds.
func TestListPages(t *testing.T) {
	t.Parallel()
	url := startServer(t)
	const n = 1003
	u := upload.NewUploader(ferryv1connect.NewUploadServiceClient(http.DefaultClient, url), upload.UploaderOptions{})
	var g errgroup.Group
	g.SetLimit(8)
	for i := range n {
		g.Go(func() error {
			_, err := u.UploadStream(context.Background(), fmt.Sprintf("many/%04d", i), strings.NewReader("x"), upload.ObjectOptions{})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	r := ferry(t, nil, env("FERRY_SERVER", url), "ls", "many/")
	if lines := strings.Count(r.stdout, "\n"); r.code != 0 || lines != n {
		t.Fatalf("ls: status %d, %d lines, want %d; stderr %q", r.code, lines, n, r.stderr)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	url := startServer(t)
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := env("FERRY_SERVER", url)
	cases := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no command", nil, exitUsage, "missing command"},
		{"unknown command", []string{"fly"}, exitUsage, `unknown command "fly"`},
		{"unknown flag", []string{"upload", "--fast", file, "k"}, exitUsage, "unknown flag"},
		{"missing argument", []string{"upload", file}, exitUsage, "accepts 2 arg(s)"},
		{"bad protocol", []string{"stat", "--protocol", "smtp", "k"}, exitUsage, `protocol "smtp"`},
		{"bad chunk size", []string{"upload", "--chunk-size", "lots", file, "k"}, exitUsage, "--chunk-size"},
		{"bad rate", []string{"upload", "--limit-rate", "fast", file, "k"}, exitUsage, "--limit-rate"},
		{"zero rate", []string{"download", "--limit-rate", "0", "k", "-"}, exitUsage, "--limit-rate must be more than 0"},
		{"bad server", []string{"stat", "--server", "ftp://x", "k"}, exitUsage, "http:// or https://"},
		{"resume stdin", []string{"upload", "--resume", "id", "-", "k"}, exitUsage, "--resume needs a file"},
		{"bad serve flag", []string{"serve", "--chunk-size", "1x"}, exitUsage, "--chunk-size"},
		{"reserved key", []string{"upload", file, ".ferry/k"}, exitError, "invalid_argument"},
		{"missing object", []string{"download", "nothing", filepath.Join(t.TempDir(), "out")}, exitError, "not_found"},
		{"missing file", []string{"upload", filepath.Join(t.TempDir(), "none"), "k"}, exitError, "no such file"},
		{"unknown upload", []string{"upload", "--resume", "00000000-0000-4000-8000-000000000000", file, "k"}, exitError, "not_found"},
		{"nothing to resume", []string{"download", "--resume", "k", filepath.Join(t.TempDir(), "out")}, exitError, "nothing to resume"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := ferry(t, nil, e, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("ferry %s: status %d, stderr %q; want %d and %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.code, tc.stderr)
			}
		})
	}
}

// TestServeConfig checks how `ferry serve` reads its flags and the
// environment: flags win, S3 needs an endpoint and a bucket, and the local
// store defaults to the user's data directory.
func TestServeConfig(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		args    []string
		env     lookupEnvFunc
		want    func(serveConfig) bool
		usage   bool
		explain string
	}{
		{
			name: "env", env: env("FERRY_S3_ENDPOINT", "minio:9000", "FERRY_S3_BUCKET", "b", "FERRY_S3_ACCESS_KEY", "a", "FERRY_S3_SECRET_KEY", "s", "FERRY_S3_INSECURE", "true", "FERRY_S3_REGION", "r"),
			want: func(c serveConfig) bool {
				return c.useS3() && c.s3.Endpoint == "minio:9000" && c.s3.Bucket == "b" && c.s3.AccessKey == "a" && c.s3.SecretKey == "s" && c.s3.Insecure && c.s3.Region == "r"
			},
			explain: "S3 settings from the environment",
		},
		{
			name: "flags win", args: []string{"--s3-bucket", "flag", "--s3-insecure=false", "--s3-create-bucket"},
			env: env("FERRY_S3_ENDPOINT", "minio:9000", "FERRY_S3_BUCKET", "env", "FERRY_S3_INSECURE", "1"),
			want: func(c serveConfig) bool {
				return c.s3.Bucket == "flag" && c.s3.Endpoint == "minio:9000" && !c.s3.Insecure && c.s3.CreateBucket
			},
			explain: "the flags' bucket, insecure and create-bucket settings",
		},
		{name: "endpoint without bucket", args: []string{"--s3-endpoint", "minio:9000"}, env: env(), usage: true},
		{name: "bad boolean", env: env("FERRY_S3_ENDPOINT", "e", "FERRY_S3_BUCKET", "b", "FERRY_S3_INSECURE", "maybe"), usage: true},
		{name: "data with S3", args: []string{"--data", "/d", "--s3-endpoint", "e", "--s3-bucket", "b"}, env: env(), usage: true},
		{
			name: "default data dir", env: env("XDG_DATA_HOME", "/xdg"),
			want:    func(c serveConfig) bool { return !c.useS3() && c.dataDir == filepath.Join("/xdg", "ferry") },
			explain: "the local store in $XDG_DATA_HOME/ferry",
		},
		{
			name: "sizes and durations", args: []string{"--chunk-size", "16MiB", "--max-chunk-size", "128MB", "--data", "/d", "--upload-ttl", "1h", "--cors-origin", "a", "--cors-origin", "b", "--log-level", "debug"}, env: env(),
			want: func(c serveConfig) bool {
				return c.chunkSize == 16<<20 && c.maxChunkSize == 128e6 && c.dataDir == "/d" && c.uploadTTL == time.Hour &&
					strings.Join(c.corsOrigins, ",") == "a,b" && c.logLevel == slog.LevelDebug
			},
			explain: "16 MiB chunks, at most 128 MB, a TTL of 1h, two CORS origins, debug logs",
		},
		{name: "not a size", args: []string{"--chunk-size", "lots"}, env: env(), usage: true},
		// Every limit is checked at startup (issue: --upload-ttl 0 used to
		// be accepted and made the sweeper scan every second).
		{name: "upload ttl 0", args: []string{"--upload-ttl", "0"}, env: env(), usage: true},
		{name: "upload ttl under a minute", args: []string{"--upload-ttl", "30s"}, env: env(), usage: true},
		{name: "chunk under 5 MiB", args: []string{"--chunk-size", "1MiB"}, env: env(), usage: true},
		{name: "max chunk over 5 GiB", args: []string{"--max-chunk-size", "6GiB"}, env: env(), usage: true},
		{name: "max chunk under chunk", args: []string{"--chunk-size", "32MiB", "--max-chunk-size", "16MiB"}, env: env(), usage: true},
		{name: "no connections", args: []string{"--max-connections", "0"}, env: env(), usage: true},
		{name: "no shutdown time", args: []string{"--shutdown-timeout", "0"}, env: env(), usage: true},
		{name: "token streams over all", args: []string{"--max-streams", "4", "--max-streams-per-token", "5"}, env: env(), usage: true},
		{name: "token bytes under a message", args: []string{"--max-inflight-bytes-per-token", "8MiB"}, env: env(), usage: true},
		{name: "token bytes over all", args: []string{"--max-inflight-bytes", "128MiB", "--max-inflight-bytes-per-token", "256MiB"}, env: env(), usage: true},
		{name: "no limit wait", args: []string{"--limit-wait", "0"}, env: env(), usage: true},
		{name: "negative timeout", args: []string{"--request-timeout", "-1s"}, env: env(), usage: true},
		{name: "not a level", args: []string{"--log-level", "loud"}, env: env(), usage: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got *serveConfig
			cmd := newServeCommand(stdio{in: strings.NewReader(""), out: io.Discard, err: io.Discard}, tc.env, func(_ context.Context, cfg serveConfig, _ *slog.Logger) error {
				got = &cfg
				return nil
			})
			cmd.SetArgs(tc.args)
			cmd.SetOut(io.Discard)
			cmd.SetErr(io.Discard)
			err := cmd.Execute()
			if tc.usage {
				if !errors.As(err, new(usageError)) {
					t.Fatalf("ferry serve %s: %v, want a usage error", strings.Join(tc.args, " "), err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got == nil || !tc.want(*got) {
				t.Errorf("config %+v, want %s", got, tc.explain)
			}
		})
	}
}

// TestServeEndpoints checks the health check, reflection and CORS wiring.
func TestServeEndpoints(t *testing.T) {
	t.Parallel()
	url := startServer(t, "--cors-origin", "https://app.example")
	req, err := http.NewRequest(http.MethodOptions, url+"/ferry.v1.ObjectService/StatObject", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "connect-protocol-version,content-type") // sorted, as browsers send it
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := res.Header.Get("Access-Control-Allow-Origin"); got != "https://app.example" {
		t.Errorf("CORS preflight: Access-Control-Allow-Origin %q, want the origin", got)
	}
	res, err = http.Post(url+"/grpc.health.v1.Health/Check", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != http.StatusOK || !strings.Contains(string(body), "SERVING") {
		t.Errorf("health check: %s %q (%v), want 200 and SERVING", res.Status, body, err)
	}
	for _, path := range []string{
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
		"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
	} {
		res, err := http.Post(url+path, "application/connect+json", strings.NewReader(""))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode == http.StatusNotFound {
			t.Errorf("POST %s: 404, the reflection handler is not mounted", path)
		}
	}
}

// TestClientEnv checks that FERRY_CONCURRENCY and FERRY_CHUNK_SIZE set the
// client flags, and that the flags win over them.
func TestClientEnv(t *testing.T) {
	t.Parallel()
	url := startServer(t)
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		env    []string
		args   []string
		code   int
		stderr string
	}{
		{"bad chunk size", []string{"FERRY_CHUNK_SIZE", "lots"}, []string{"upload", file, "k1"}, exitUsage, "FERRY_CHUNK_SIZE"},
		{"bad concurrency", []string{"FERRY_CONCURRENCY", "many"}, []string{"download", "k", file + ".out"}, exitUsage, "FERRY_CONCURRENCY"},
		{"zero concurrency", []string{"FERRY_CONCURRENCY", "0"}, []string{"upload", file, "k2"}, exitUsage, "at least 1"},
		{"flags win", []string{"FERRY_CHUNK_SIZE", "lots", "FERRY_CONCURRENCY", "0"}, []string{"upload", "--chunk-size", "5MiB", "--concurrency", "2", file, "k3"}, 0, ""},
		{"good values", []string{"FERRY_CHUNK_SIZE", "5MiB", "FERRY_CONCURRENCY", "2"}, []string{"upload", file, "k4"}, 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := ferry(t, nil, env(append([]string{"FERRY_SERVER", url}, tc.env...)...), tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("ferry %s: status %d, stderr %q; want %d and %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.code, tc.stderr)
			}
		})
	}
}
