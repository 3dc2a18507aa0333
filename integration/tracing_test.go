package integration

import (
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is an OTLP/HTTP trace receiver: it keeps the spans
// exporters POST to /v1/traces (protobuf, as otlptracehttp sends them).
type otlpReceiver struct {
	url   string
	mu    sync.Mutex
	spans []receivedSpan
}

// receivedSpan is one exported span, as the receiver saw it.
type receivedSpan struct {
	service, name, traceID, spanID, parentID string
	kind                                     int32 // OTLP SpanKind: 2 server, 3 client
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	r := &otlpReceiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(io.LimitReader(req.Body, 16<<20))
		if err != nil || req.URL.Path != "/v1/traces" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		var msg collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &msg); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, rs := range msg.GetResourceSpans() {
			service := ""
			for _, a := range rs.GetResource().GetAttributes() {
				if a.GetKey() == "service.name" {
					service = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					r.spans = append(r.spans, receivedSpan{service: service, name: s.GetName(), kind: int32(s.GetKind()),
						traceID: hex.EncodeToString(s.GetTraceId()), spanID: hex.EncodeToString(s.GetSpanId()), parentID: hex.EncodeToString(s.GetParentSpanId())})
				}
			}
		}
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

// received returns the spans received so far.
func (r *otlpReceiver) received() []receivedSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.spans)
}

// TestTracingThroughNginx follows one `ferry upload` and one `ferry
// download` from the CLI through nginx (the repo's config) to `ferry serve
// --otlp-endpoint` on S3, each process exporting to one OTLP receiver: the
// CLI (through OTEL_EXPORTER_OTLP_ENDPOINT) and the server must make one
// trace per command, the server's RPC spans children of the CLI's client
// spans, and the S3 requests' spans in the same trace. Over gRPC (nginx's
// grpc_pass) and Connect (proxy_pass).
func TestTracingThroughNginx(t *testing.T) {
	t.Parallel()
	recv := startOTLPReceiver(t)
	env := requireS3(t)
	srv := startServer(t, append(env.serveArgs(env.newBucket(t)), "--otlp-endpoint", recv.url)...)
	lb := startNginx(t, []string{srv.addr})
	file := generated(t, 9*MiB+1, 91)
	for _, protocol := range []string{"grpc", "connect"} {
		url := lb.httpURL
		if protocol == "grpc" {
			url = lb.h2cURL
		}
		key := "traced/" + protocol
		otlp := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.url}
		ferryWithEnv(t, otlp, "upload", "--server", url, "--protocol", protocol, file, key)
		out := t.TempDir() + "/back"
		ferryWithEnv(t, otlp, "download", "--server", url, "--protocol", protocol, key, out)
		requireSameFile(t, file, out)
	}
	srv.Stop(t) // flushes the server's spans

	spans := recv.received()
	byID := map[string]receivedSpan{}
	for _, s := range spans {
		byID[s.spanID] = s
	}
	var roots []receivedSpan
	for _, s := range spans {
		if s.service == "ferry-cli" && s.parentID == "" {
			roots = append(roots, s)
		}
	}
	perService := map[string]int{}
	for _, s := range spans {
		perService[s.service]++
	}
	t.Logf("spans received per service: %v", perService)
	if len(roots) != 4 {
		t.Fatalf("%d root spans from the CLI, want 4 (2 commands × 2 protocols); spans: %v", len(roots), spans)
	}
	for _, root := range roots {
		var server, s3 int
		for _, s := range spans {
			if s.traceID != root.traceID || s.service != "ferry" {
				continue
			}
			switch {
			case s.kind == 2 && strings.HasPrefix(s.name, "ferry.v1."):
				parent, ok := byID[s.parentID]
				if !ok || parent.service != "ferry-cli" || parent.kind != 3 || parent.name != s.name {
					t.Errorf("%s: server span %s's parent %+v is not the CLI's client span of the same RPC", root.name, s.name, parent)
				}
				server++
			case s.kind == 3:
				s3++ // otelhttp: an S3 request
			}
		}
		if server == 0 || s3 == 0 {
			t.Errorf("trace of %q: %d server RPC spans and %d S3 request spans, want some of each", root.name, server, s3)
		}
	}
}

// ferryWithEnv runs the ferry CLI with extra environment variables and
// fails the test unless it exits 0.
func ferryWithEnv(t testing.TB, extra []string, args ...string) {
	t.Helper()
	p := startCLI(t, nil, extra, args...)
	if code := p.wait(t); code != 0 {
		t.Fatalf("ferry %s: exit status %d\n%s", strings.Join(args, " "), code, p.stderr.String())
	}
}
