package integration

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
)

// The tokens of the authorization tests: secrets and rights.
const (
	aliceToken  = "alice-secret-token-0123456789"  // read and write team-a/
	bobToken    = "bob-secret-token-0123456789"    // read and write team-b/
	readerToken = "reader-secret-token-0123456789" // read team-a/ only
	wrongToken  = "not-a-configured-token-0123456789"
)

// writeTokenFile writes the token file of the authorization tests (alice
// and reader in clear, bob as a SHA-256 hash) and returns its path.
func writeTokenFile(t testing.TB, extra ...map[string]any) string {
	t.Helper()
	sum := func(s string) string {
		return fmt.Sprintf("%x", sha256.Sum256([]byte(s)))
	}
	tokens := []map[string]any{
		{"name": "alice", "token": aliceToken, "read": []string{"team-a/"}, "write": []string{"team-a/"}},
		{"name": "bob", "sha256": sum(bobToken), "read": []string{"team-b/"}, "write": []string{"team-b/"}},
		{"name": "reader", "token": readerToken, "read": []string{"team-a/"}},
	}
	tokens = append(tokens, extra...)
	b, err := json.MarshalIndent(map[string]any{"tokens": tokens}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tokens.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// bearer is a connect client interceptor sending "authorization: Bearer
// TOKEN" (none when empty) on unary and streaming calls.
type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if b != "" {
			req.Header().Set("Authorization", "Bearer "+string(b))
		}
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if b != "" {
			conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		}
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// secClients are connect-go clients of the three services, with one token
// and one protocol.
type secClients struct {
	upload   ferryv1connect.UploadServiceClient
	download ferryv1connect.DownloadServiceClient
	objects  ferryv1connect.ObjectServiceClient
}

// newSecClients returns clients of baseURL speaking protocol (connect,
// grpc or grpcweb) with token (none when empty), over hc.
func newSecClients(hc *http.Client, baseURL, protocol, token string) secClients {
	opts := []connect.ClientOption{connect.WithInterceptors(bearer(token))}
	switch protocol {
	case "grpc":
		opts = append(opts, connect.WithGRPC())
	case "grpcweb":
		opts = append(opts, connect.WithGRPCWeb())
	}
	return secClients{
		upload:   ferryv1connect.NewUploadServiceClient(hc, baseURL, opts...),
		download: ferryv1connect.NewDownloadServiceClient(hc, baseURL, opts...),
		objects:  ferryv1connect.NewObjectServiceClient(hc, baseURL, opts...),
	}
}

// secHTTPClient returns an HTTP client for protocol over plaintext: h2c for
// gRPC, HTTP/1.1 for Connect and gRPC-Web (what browsers use).
func secHTTPClient(t testing.TB, protocol string) *http.Client {
	p := new(http.Protocols)
	if protocol == "grpc" {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	c := &http.Client{Transport: &http.Transport{Protocols: p, MaxIdleConnsPerHost: 64}}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func secChunk(index int64, data []byte) *ferryv1.Chunk {
	return &ferryv1.Chunk{Index: index, Data: data, Crc32C: proto.Uint32(crc32.Checksum(data, castagnoli))}
}

// secStream sends one Upload stream: header, then one chunk of data, then a
// finish, and returns the response.
func secStream(ctx context.Context, c ferryv1connect.UploadServiceClient, header *ferryv1.UploadHeader, data []byte) (*ferryv1.UploadResponse, error) {
	stream := c.Upload(ctx)
	msgs := []*ferryv1.UploadRequest{
		{Message: &ferryv1.UploadRequest_Header{Header: header}},
		{Message: &ferryv1.UploadRequest_Chunk{Chunk: secChunk(0, data)}},
		{Message: &ferryv1.UploadRequest_Finish{Finish: &ferryv1.UploadFinish{Size: proto.Int64(int64(len(data)))}}},
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			if errors.Is(err, io.EOF) {
				break // the server answered early; CloseAndReceive has it
			}
			return nil, err
		}
	}
	res, err := stream.CloseAndReceive()
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// secPut stores data at key in one Upload stream.
func secPut(ctx context.Context, c ferryv1connect.UploadServiceClient, key string, data []byte) error {
	_, err := secStream(ctx, c, &ferryv1.UploadHeader{Target: &ferryv1.UploadHeader_Create{
		Create: &ferryv1.UploadSpec{Key: key, Size: proto.Int64(int64(len(data)))},
	}}, data)
	return err
}

// secOpenUpload creates an upload of data at key and commits its one chunk,
// leaving it open, and returns its ID.
func secOpenUpload(ctx context.Context, c ferryv1connect.UploadServiceClient, key string, data []byte) (string, error) {
	res, err := c.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: key, Size: proto.Int64(int64(len(data)))}}))
	if err != nil {
		return "", err
	}
	id := res.Msg.GetUpload().GetUploadId()
	_, err = c.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: id, Chunk: secChunk(0, data)}))
	return id, err
}

// secCode is the Connect code of err as text: "ok" for nil.
func secCode(err error) string {
	if err == nil {
		return "ok"
	}
	return connect.CodeOf(err).String()
}

// authFixture is what one authorization case works on, made by the owner
// of the target prefix before the case runs: an object and an open upload
// (its one chunk committed) under the prefix, and a fresh key there.
type authFixture struct {
	prefix   string
	object   string // existing object
	uploadID string // open upload under prefix
	newKey   string // key that does not exist yet
	data     []byte
}

// authOp is one operation of the authorization matrix, run by the caller's
// clients on a fixture.
type authOp struct {
	name string
	run  func(ctx context.Context, c secClients, f authFixture) error
	// read: the operation needs read rights on the prefix; else write.
	read bool
	// byID: the request names only an upload ID (checked by the upload
	// service: NotFound rather than PermissionDenied).
	byID bool
	// check, run with the owner's clients after a refused call, proves the
	// call changed nothing.
	check func(ctx context.Context, owner secClients, f authFixture) error
}

var authOps = []authOp{
	{name: "Upload(create)", run: func(ctx context.Context, c secClients, f authFixture) error {
		return secPut(ctx, c.upload, f.newKey, f.data)
	}, check: requireNoObject},
	{name: "CreateUpload", run: func(ctx context.Context, c secClients, f authFixture) error {
		_, err := c.upload.CreateUpload(ctx, connect.NewRequest(&ferryv1.CreateUploadRequest{Spec: &ferryv1.UploadSpec{Key: f.newKey}}))
		return err
	}},
	{name: "Upload(upload_id)", byID: true, run: func(ctx context.Context, c secClients, f authFixture) error {
		_, err := secStream(ctx, c.upload, &ferryv1.UploadHeader{Target: &ferryv1.UploadHeader_UploadId{UploadId: f.uploadID}}, f.data)
		return err
	}, check: requireOpenUpload},
	{name: "PutChunk", byID: true, run: func(ctx context.Context, c secClients, f authFixture) error {
		_, err := c.upload.PutChunk(ctx, connect.NewRequest(&ferryv1.PutChunkRequest{UploadId: f.uploadID, Chunk: secChunk(0, f.data)}))
		return err
	}, check: requireOpenUpload},
	{name: "GetUpload", byID: true, run: func(ctx context.Context, c secClients, f authFixture) error {
		_, err := c.upload.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: f.uploadID}))
		return err
	}},
	{name: "CompleteUpload", byID: true, run: func(ctx context.Context, c secClients, f authFixture) error {
		_, err := c.upload.CompleteUpload(ctx, connect.NewRequest(&ferryv1.CompleteUploadRequest{UploadId: f.uploadID}))
		return err
	}, check: requireOpenUpload},
	{name: "AbortUpload", byID: true, run: func(ctx context.Context, c secClients, f authFixture) error {
		_, err := c.upload.AbortUpload(ctx, connect.NewRequest(&ferryv1.AbortUploadRequest{UploadId: f.uploadID}))
		return err
	}, check: requireOpenUpload},
	{name: "Download", read: true, run: func(ctx context.Context, c secClients, f authFixture) error {
		stream, err := c.download.Download(ctx, connect.NewRequest(&ferryv1.DownloadRequest{Key: f.object}))
		if err != nil {
			return err
		}
		defer stream.Close()
		var got []byte
		for stream.Receive() {
			got = append(got, stream.Msg().GetData()...)
		}
		if err := stream.Err(); err != nil {
			return err
		}
		if string(got) != string(f.data) {
			return fmt.Errorf("downloaded %d bytes that differ from the %d stored", len(got), len(f.data))
		}
		return nil
	}},
	{name: "StatObject", read: true, run: func(ctx context.Context, c secClients, f authFixture) error {
		_, err := c.objects.StatObject(ctx, connect.NewRequest(&ferryv1.StatObjectRequest{Key: f.object}))
		return err
	}},
	{name: "ListObjects", read: true, run: func(ctx context.Context, c secClients, f authFixture) error {
		res, err := c.objects.ListObjects(ctx, connect.NewRequest(&ferryv1.ListObjectsRequest{Prefix: f.prefix}))
		if err == nil && len(res.Msg.GetObjects()) == 0 {
			return fmt.Errorf("listed nothing under %q", f.prefix)
		}
		return err
	}},
	{name: "DeleteObject", run: func(ctx context.Context, c secClients, f authFixture) error {
		_, err := c.objects.DeleteObject(ctx, connect.NewRequest(&ferryv1.DeleteObjectRequest{Key: f.object}))
		return err
	}, check: requireObject},
}

func requireNoObject(ctx context.Context, owner secClients, f authFixture) error {
	_, err := owner.objects.StatObject(ctx, connect.NewRequest(&ferryv1.StatObjectRequest{Key: f.newKey}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		return fmt.Errorf("refused upload: stat %s gave %v, want not_found", f.newKey, err)
	}
	return nil
}

func requireObject(ctx context.Context, owner secClients, f authFixture) error {
	if _, err := owner.objects.StatObject(ctx, connect.NewRequest(&ferryv1.StatObjectRequest{Key: f.object})); err != nil {
		return fmt.Errorf("refused delete: object %s is gone: %v", f.object, err)
	}
	return nil
}

func requireOpenUpload(ctx context.Context, owner secClients, f authFixture) error {
	res, err := owner.upload.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: f.uploadID}))
	if err != nil {
		return fmt.Errorf("refused call: upload %s is no longer open: %v", f.uploadID, err)
	}
	if n := len(res.Msg.GetChunks()); n != 1 {
		return fmt.Errorf("refused call: upload %s has %d chunks, want the 1 committed before", f.uploadID, n)
	}
	return requireNoObject(ctx, owner, authFixture{newKey: res.Msg.GetUpload().GetSpec().GetKey()})
}

// authCaller is a token of the matrix and the prefixes it may read and
// write.
type authCaller struct {
	name, token string
	read, write string // prefix, "" for none
}

var authCallers = []authCaller{
	{name: "none"},
	{name: "invalid", token: wrongToken},
	{name: "alice", token: aliceToken, read: "team-a/", write: "team-a/"},
	{name: "reader", token: readerToken, read: "team-a/"},
}

// want is the code the matrix expects for caller × prefix × op.
func (c authCaller) want(prefix string, op authOp) string {
	switch {
	case c.token == "" || c.token == wrongToken:
		return "unauthenticated"
	case op.read && c.read == prefix, !op.read && c.write == prefix:
		return "ok"
	case !op.read && c.write == "":
		// A token that may write nothing is refused every write from its
		// headers, before its body is read: whatever the upload ID, so
		// that says nothing about which IDs exist.
		return "permission_denied"
	case op.byID:
		return "not_found"
	}
	return "permission_denied"
}

// TestAuthorizationMatrix runs every operation as every kind of caller (no
// token, an unknown token, a read-write token of team-a/, a read-only token
// of team-a/) on objects and uploads of team-a/ and team-b/, over Connect,
// gRPC and gRPC-Web against the real binary, and checks the code of each
// and that refused calls changed nothing.
func TestAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--data", t.TempDir(), "--token-file", writeTokenFile(t))
	owners := map[string]string{"team-a/": aliceToken, "team-b/": bobToken}

	var mu sync.Mutex
	var table []string
	for _, protocol := range []string{"connect", "grpc", "grpcweb"} {
		t.Run(protocol, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			hc := secHTTPClient(t, protocol)
			n := 0
			fixture := func(prefix string) (authFixture, secClients) {
				t.Helper()
				n++
				owner := newSecClients(hc, srv.url, protocol, owners[prefix])
				f := authFixture{
					prefix: prefix,
					object: fmt.Sprintf("%s%s/object-%d", prefix, protocol, n),
					newKey: fmt.Sprintf("%s%s/new-%d", prefix, protocol, n),
					data:   []byte(fmt.Sprintf("the data of case %d over %s", n, protocol)),
				}
				if err := secPut(ctx, owner.upload, f.object, f.data); err != nil {
					t.Fatalf("owner of %s: put %s: %v", prefix, f.object, err)
				}
				var err error
				if f.uploadID, err = secOpenUpload(ctx, owner.upload, prefix+protocol+fmt.Sprintf("/open-%d", n), f.data); err != nil {
					t.Fatalf("owner of %s: open upload: %v", prefix, err)
				}
				return f, owner
			}
			for _, caller := range authCallers {
				c := newSecClients(hc, srv.url, protocol, caller.token)
				for _, prefix := range []string{"team-a/", "team-b/"} {
					for _, op := range authOps {
						f, owner := fixture(prefix)
						err := op.run(ctx, c, f)
						got, want := secCode(err), caller.want(prefix, op)
						line := fmt.Sprintf("%-8s %-8s %-8s %-18s → %s", protocol, caller.name, prefix, op.name, got)
						mu.Lock()
						table = append(table, line)
						mu.Unlock()
						if got != want {
							t.Errorf("%s: got %s (%v), want %s", line, got, err, want)
							continue
						}
						if got != "ok" && op.check != nil {
							if err := op.check(ctx, owner, f); err != nil {
								t.Errorf("%s: %v", line, err)
							}
						}
					}
				}
			}

			// Listing everything, or a prefix wider than the token's, is refused.
			alice := newSecClients(hc, srv.url, protocol, aliceToken)
			for _, prefix := range []string{"", "team-", "team-a"} {
				_, err := alice.objects.ListObjects(ctx, connect.NewRequest(&ferryv1.ListObjectsRequest{Prefix: prefix}))
				line := fmt.Sprintf("%-8s %-8s %-8q %-18s → %s", protocol, "alice", prefix, "ListObjects", secCode(err))
				mu.Lock()
				table = append(table, line)
				mu.Unlock()
				if connect.CodeOf(err) != connect.CodePermissionDenied {
					t.Errorf("%s: got %v, want permission_denied", line, err)
				}
			}

			// Another user's upload ID is answered exactly as one that never
			// existed, so IDs cannot be probed.
			f, _ := fixture("team-b/")
			_, errForeign := alice.upload.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: f.uploadID}))
			unknown := uuid.NewString()
			_, errUnknown := alice.upload.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: unknown}))
			foreignMsg := strings.ReplaceAll(fmt.Sprint(errForeign), f.uploadID, "ID")
			unknownMsg := strings.ReplaceAll(fmt.Sprint(errUnknown), unknown, "ID")
			if connect.CodeOf(errForeign) != connect.CodeNotFound || foreignMsg != unknownMsg {
				t.Errorf("another user's upload: %v; an unknown upload: %v; want the same not_found", errForeign, errUnknown)
			}
		})
	}
	t.Cleanup(func() {
		sort.Strings(table)
		t.Logf("authorization matrix (%d cases):\n%s", len(table), strings.Join(table, "\n"))
	})
}

// TestAuthCLI drives the ferry CLI with --token against a server with
// tokens: alice uploads, lists and downloads under team-a/; bob may not
// read alice's object; without a token the CLI gets unauthenticated.
func TestAuthCLI(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--data", t.TempDir(), "--token-file", writeTokenFile(t))
	dir := t.TempDir()
	src := filepath.Join(dir, "in.txt")
	if err := os.WriteFile(src, []byte("hello from alice\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustFerry(t, "upload", "-q", "--server", srv.url, "--token", aliceToken, src, "team-a/hello.txt")
	out := mustFerry(t, "ls", "--server", srv.url, "--token", aliceToken, "team-a/")
	if !strings.Contains(out.stdout, "team-a/hello.txt") {
		t.Errorf("ferry ls team-a/ as alice:\n%s\nwant team-a/hello.txt", out.stdout)
	}
	dst := filepath.Join(dir, "out.txt")
	mustFerry(t, "download", "-q", "--server", srv.url, "--protocol", "grpcweb", "--token", aliceToken, "team-a/hello.txt", dst)
	if b, err := os.ReadFile(dst); err != nil || string(b) != "hello from alice\n" {
		t.Errorf("downloaded %q, %v", b, err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"stat", "--server", srv.url, "--protocol", "grpc", "--token", bobToken, "team-a/hello.txt"}, "permission_denied"},
		{[]string{"upload", "-q", "--server", srv.url, "--token", bobToken, src, "team-a/bob.txt"}, "permission_denied"},
		{[]string{"stat", "--server", srv.url, "team-a/hello.txt"}, "unauthenticated"},
		{[]string{"stat", "--server", srv.url, "--token", wrongToken, "team-a/hello.txt"}, "unauthenticated"},
	} {
		r := ferry(t, c.args...)
		if r.err == nil || !strings.Contains(r.stderr, c.want) {
			t.Errorf("ferry %s: err %v, stderr %q; want a failure naming %s", strings.Join(c.args, " "), r.err, r.stderr, c.want)
		}
	}
}

// TestAuthUploadsPerToken shows --max-uploads-per-token: with a limit of 2,
// alice's third upload request while two Upload streams are open is
// ResourceExhausted, bob (another token) is unaffected, and alice may upload
// again once a stream ends.
func TestAuthUploadsPerToken(t *testing.T) {
	t.Parallel()
	metricsAddr := freeLoopbackAddr(t)
	srv := startServer(t, "--data", t.TempDir(), "--token-file", writeTokenFile(t),
		"--max-uploads-per-token", "2", "--metrics-addr", metricsAddr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hc := secHTTPClient(t, "grpc")
	alice := newSecClients(hc, srv.url, "grpc", aliceToken)
	bob := newSecClients(hc, srv.url, "grpc", bobToken)

	var open []*connect.ClientStreamForClient[ferryv1.UploadRequest, ferryv1.UploadResponse]
	for i := range 2 {
		s := alice.upload.Upload(ctx)
		if err := s.Send(&ferryv1.UploadRequest{Message: &ferryv1.UploadRequest_Header{Header: &ferryv1.UploadHeader{
			Target: &ferryv1.UploadHeader_Create{Create: &ferryv1.UploadSpec{Key: fmt.Sprintf("team-a/held-%d", i)}},
		}}}); err != nil {
			t.Fatal(err)
		}
		open = append(open, s)
	}
	waitMetric(t, metricsAddr, "ferry_active_uploads", 2)

	err := secPut(ctx, alice.upload, "team-a/third", []byte("third"))
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("alice's third upload with two in flight: %v, want resource_exhausted", err)
	}
	t.Logf("third upload: %v", err)
	if err := secPut(ctx, bob.upload, "team-b/other-token", []byte("bob")); err != nil {
		t.Fatalf("bob's upload while alice is at her limit: %v", err)
	}
	if _, err := open[0].CloseAndReceive(); err != nil {
		t.Fatalf("first held stream: %v", err)
	}
	waitMetric(t, metricsAddr, "ferry_active_uploads", 1)
	if err := secPut(ctx, alice.upload, "team-a/third", []byte("third")); err != nil {
		t.Fatalf("alice's upload after one stream ended: %v", err)
	}
	if _, err := open[1].CloseAndReceive(); err != nil {
		t.Fatalf("second held stream: %v", err)
	}
}

// TestLoopbackOnlyWithoutTokens: without --token-file, ferry serve refuses
// an address other hosts can reach, and says why.
func TestLoopbackOnlyWithoutTokens(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0"} {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		cmd := exec.CommandContext(ctx, ferryBin, "serve", "--addr", addr, "--data", t.TempDir())
		cmd.Env = cliEnv()
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), "without authentication") || !strings.Contains(string(out), "--token-file") {
			t.Errorf("ferry serve --addr %s without tokens: err %v, output %q; want a refusal naming --token-file", addr, err, out)
		}
	}
	srv := startServer(t, "--data", t.TempDir())
	if !strings.Contains(srv.logs.String(), "loopback only") {
		t.Errorf("server without tokens did not log that it serves loopback only:\n%s", srv.logs)
	}
}

// TestCORSWithTokens: a browser page on an allowed origin may send the
// bearer token: the preflight allows the Authorization header without a
// token, and answers, refusals included, carry the CORS headers the page
// needs to read them. Another origin is not allowed.
func TestCORSWithTokens(t *testing.T) {
	t.Parallel()
	const origin = "https://page.example"
	srv := startServer(t, "--data", t.TempDir(), "--token-file", writeTokenFile(t), "--cors-origin", origin)
	hc := secHTTPClient(t, "connect")
	url := srv.url + "/ferry.v1.ObjectService/StatObject"

	for _, c := range []struct {
		origin string
		allow  bool
	}{{origin, true}, {"https://evil.example", false}} {
		req, _ := http.NewRequest(http.MethodOptions, url, nil)
		req.Header.Set("Origin", c.origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization,content-type,x-grpc-web,x-user-agent")
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		allowed := res.Header.Get("Access-Control-Allow-Origin") == c.origin &&
			strings.Contains(strings.ToLower(res.Header.Get("Access-Control-Allow-Headers")), "authorization")
		if allowed != c.allow {
			t.Errorf("preflight from %s: %s, headers %v; want allowed=%v", c.origin, res.Status, res.Header, c.allow)
		}
	}

	for _, c := range []struct {
		token, want string
	}{{aliceToken, "not_found"}, {"", "unauthenticated"}} {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"key":"team-a/none"}`))
		req.Header.Set("Origin", origin)
		req.Header.Set("Content-Type", "application/json")
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.Header.Get("Access-Control-Allow-Origin") != origin || !strings.Contains(string(body), c.want) {
			t.Errorf("cross-origin call with token %q: %s %s, Access-Control-Allow-Origin %q; want %s readable by the page",
				c.token, res.Status, body, res.Header.Get("Access-Control-Allow-Origin"), c.want)
		}
	}
}
