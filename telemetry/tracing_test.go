package telemetry_test

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ferryhq/ferry/download"
	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/store/diskstore"
	"github.com/ferryhq/ferry/telemetry"
	"github.com/ferryhq/ferry/upload"
)

// TestTracing runs an upload, a download and a refused call through a
// server and a client that both trace into one in-memory exporter, and
// checks the trace they make: each server RPC span is the child of the
// client span of the same RPC (the context crossed in the traceparent
// header), each store call is a child of the RPC that made it, and the
// refused call's spans record its code.
func TestTracing(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	rpc, err := telemetry.RPCTracing(tp)
	if err != nil {
		t.Fatal(err)
	}

	disk, err := diskstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st := telemetry.TraceStore(disk, tp)
	uploads, err := upload.NewService(upload.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(ferryv1connect.NewUploadServiceHandler(uploads, connect.WithInterceptors(rpc)))
	mux.Handle(ferryv1connect.NewDownloadServiceHandler(download.NewService(st), connect.WithInterceptors(rpc)))
	mux.Handle(ferryv1connect.NewObjectServiceHandler(download.NewObjectService(st), connect.WithInterceptors(rpc)))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	ctx := context.Background()
	uc := ferryv1connect.NewUploadServiceClient(srv.Client(), srv.URL, connect.WithInterceptors(rpc))
	dc := ferryv1connect.NewDownloadServiceClient(srv.Client(), srv.URL, connect.WithInterceptors(rpc))
	oc := ferryv1connect.NewObjectServiceClient(srv.Client(), srv.URL, connect.WithInterceptors(rpc))

	content := bytes.Repeat([]byte("traced "), 1000)
	size, crc := int64(len(content)), crc32.Checksum(content, crc32.MakeTable(crc32.Castagnoli))
	stream := uc.Upload(ctx)
	for _, msg := range []*ferryv1.UploadRequest{
		{Message: &ferryv1.UploadRequest_Header{Header: &ferryv1.UploadHeader{Target: &ferryv1.UploadHeader_Create{Create: &ferryv1.UploadSpec{Key: "t/obj", Size: &size}}}}},
		{Message: &ferryv1.UploadRequest_Chunk{Chunk: &ferryv1.Chunk{Index: 0, Data: content, Crc32C: &crc}}},
		{Message: &ferryv1.UploadRequest_Finish{Finish: &ferryv1.UploadFinish{Size: &size, Crc32C: &crc}}},
	} {
		if err := stream.Send(msg); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := stream.CloseAndReceive(); err != nil {
		t.Fatalf("Upload: %v", err)
	}
	down, err := dc.Download(ctx, connect.NewRequest(&ferryv1.DownloadRequest{Key: "t/obj"}))
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	for down.Receive() {
		got = append(got, down.Msg().GetData()...)
	}
	if err := down.Err(); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("Download: %v", err)
	}
	if err := down.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, content) {
		t.Fatalf("downloaded %d bytes, want the %d uploaded", len(got), len(content))
	}
	if _, err := oc.StatObject(ctx, connect.NewRequest(&ferryv1.StatObjectRequest{Key: "t/missing"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("StatObject of a missing key: %v, want not_found", err)
	}

	// A caller that lies in its trace headers: a malformed traceparent, a
	// huge tracestate, baggage. The call is served as any other; its span
	// starts a trace of its own.
	liar := ferryv1connect.NewObjectServiceClient(srv.Client(), srv.URL)
	req := connect.NewRequest(&ferryv1.StatObjectRequest{Key: "t/obj"})
	req.Header().Set("traceparent", "00-zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-0000000000000000-01")
	req.Header().Set("tracestate", strings.Repeat("k=v,", 4000))
	req.Header().Set("baggage", "secret=1")
	if _, err := liar.StatObject(ctx, req); err != nil {
		t.Fatalf("StatObject with malformed trace headers: %v", err)
	}

	spans := exp.GetSpans()
	byID := map[trace.SpanID]tracetest.SpanStub{}
	for _, s := range spans {
		byID[s.SpanContext.SpanID()] = s
	}
	find := func(name string, kind trace.SpanKind) []tracetest.SpanStub {
		var out []tracetest.SpanStub
		for _, s := range spans {
			if s.Name == name && s.SpanKind == kind {
				out = append(out, s)
			}
		}
		return out
	}
	for _, proc := range []string{"ferry.v1.UploadService/Upload", "ferry.v1.DownloadService/Download", "ferry.v1.ObjectService/StatObject"} {
		servers, clients := find(proc, trace.SpanKindServer), find(proc, trace.SpanKindClient)
		if proc == "ferry.v1.ObjectService/StatObject" {
			servers = servers[:1] // the traced caller's; the liar's is checked below
		}
		if len(servers) != 1 || len(clients) != 1 {
			t.Fatalf("%s: %d server and %d client spans, want one each (spans: %v)", proc, len(servers), len(clients), names(spans))
		}
		s, c := servers[0], clients[0]
		if s.Parent.SpanID() != c.SpanContext.SpanID() || s.SpanContext.TraceID() != c.SpanContext.TraceID() {
			t.Errorf("%s: the server span's parent is %v in trace %v, want the client span %v in trace %v",
				proc, s.Parent.SpanID(), s.SpanContext.TraceID(), c.SpanContext.SpanID(), c.SpanContext.TraceID())
		}
	}
	// Store calls hang under the RPC that made them.
	for _, name := range []string{"store.PutObject", "store.ReadObject", "store.StatObject"} {
		calls := find(name, trace.SpanKindInternal)
		if len(calls) == 0 {
			t.Errorf("no %s span (spans: %v)", name, names(spans))
			continue
		}
		for _, call := range calls {
			parent, ok := byID[call.Parent.SpanID()]
			if !ok || parent.SpanKind != trace.SpanKindServer {
				t.Errorf("%s: parent %v is not a server RPC span", name, call.Parent.SpanID())
			}
		}
	}
	var miss []tracetest.SpanStub
	for _, s := range find("store.StatObject", trace.SpanKindInternal) {
		if attr(s, "ferry.key") == "t/missing" {
			miss = append(miss, s)
		}
	}
	if len(miss) != 1 || miss[0].Status.Code != codes.Error || !strings.Contains(miss[0].Status.Description, "not found") {
		t.Errorf("the store span of a missing key: %+v, want one with status Error saying not found", miss)
	}
	var lied []tracetest.SpanStub
	for _, s := range find("ferry.v1.ObjectService/StatObject", trace.SpanKindServer) {
		if !s.Parent.IsValid() {
			lied = append(lied, s)
		}
	}
	if len(lied) != 1 || !lied[0].SpanContext.TraceID().IsValid() {
		t.Errorf("the call with malformed trace headers made %d root server spans, want one with a trace of its own", len(lied))
	}
	refused := find("ferry.v1.ObjectService/StatObject", trace.SpanKindServer)[0]
	if code := attr(refused, "rpc.response.status_code"); code != "NOT_FOUND" {
		t.Errorf("the refused RPC's span records code %q, want NOT_FOUND (attributes %v)", code, refused.Attributes)
	}
}

// names lists the spans' names, for failure messages.
func names(spans tracetest.SpanStubs) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name+"/"+s.SpanKind.String())
	}
	return out
}

// attr returns the value of span's attribute key, as text ("" if none).
func attr(span tracetest.SpanStub, key string) string {
	for _, a := range span.Attributes {
		if string(a.Key) == key {
			return a.Value.String()
		}
	}
	return ""
}
