package telemetry_test

import (
	"bytes"
	"context"
	"hash/crc32"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/ferryhq/ferry/download"
	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/store/diskstore"
	"github.com/ferryhq/ferry/telemetry"
	"github.com/ferryhq/ferry/upload"
)

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestInterceptor serves the upload and object services of a disk store
// with the interceptor, uploads one object in an Upload stream, stats it
// and a missing key, and checks the log lines and metrics.
func TestInterceptor(t *testing.T) {
	t.Parallel()
	st, err := diskstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	metrics := telemetry.NewMetrics()
	uploads, err := upload.NewService(upload.Config{Store: st, Logger: log, Authorize: func(ctx context.Context, key string) error {
		telemetry.SetKey(ctx, key)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	opt := connect.WithInterceptors(telemetry.NewInterceptor(log, metrics))
	mux := http.NewServeMux()
	mux.Handle(ferryv1connect.NewUploadServiceHandler(uploads, opt))
	mux.Handle(ferryv1connect.NewObjectServiceHandler(download.NewObjectService(st), opt))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctx := context.Background()

	data := bytes.Repeat([]byte("ferry "), 1000)
	up := ferryv1connect.NewUploadServiceClient(srv.Client(), srv.URL)
	stream := up.Upload(ctx)
	for _, m := range []*ferryv1.UploadRequest{
		{Message: &ferryv1.UploadRequest_Header{Header: &ferryv1.UploadHeader{Target: &ferryv1.UploadHeader_Create{Create: &ferryv1.UploadSpec{Key: "a/b", Size: proto.Int64(int64(len(data)))}}}}},
		{Message: &ferryv1.UploadRequest_Chunk{Chunk: &ferryv1.Chunk{Data: data, Crc32C: proto.Uint32(crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)))}}},
		{Message: &ferryv1.UploadRequest_Finish{Finish: &ferryv1.UploadFinish{}}},
	} {
		if err := stream.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := stream.CloseAndReceive(); err != nil {
		t.Fatal(err)
	}
	objects := ferryv1connect.NewObjectServiceClient(srv.Client(), srv.URL)
	if _, err := objects.StatObject(ctx, connect.NewRequest(&ferryv1.StatObjectRequest{Key: "a/b"})); err != nil {
		t.Fatal(err)
	}
	if _, err := objects.StatObject(ctx, connect.NewRequest(&ferryv1.StatObjectRequest{Key: "missing"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("stat missing: %v", err)
	}
	// An upload ID request gets its key from the Authorize hook.
	if _, err := up.GetUpload(ctx, connect.NewRequest(&ferryv1.GetUploadRequest{UploadId: "00000000-0000-4000-8000-000000000000"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("get unknown upload: %v", err)
	}

	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	var rpcs []string
	for _, l := range lines {
		if strings.Contains(l, "msg=rpc") {
			rpcs = append(rpcs, l)
		}
	}
	if len(rpcs) != 4 {
		t.Fatalf("%d rpc log lines, want 4:\n%s", len(rpcs), logs.String())
	}
	for i, want := range [][]string{
		{"procedure=ferry.v1.UploadService/Upload", "protocol=connect", "key=a/b", "code=ok", "bytes_in=", "duration="},
		{"procedure=ferry.v1.ObjectService/StatObject", "key=a/b", "code=ok", "bytes_out="},
		{"procedure=ferry.v1.ObjectService/StatObject", "key=missing", "code=not_found", `err="object \"missing\" not found"`},
		{"procedure=ferry.v1.UploadService/GetUpload", "upload_id=00000000-0000-4000-8000-000000000000", "code=not_found"},
	} {
		for _, w := range want {
			if !strings.Contains(rpcs[i], w) {
				t.Errorf("log line %d lacks %s:\n%s", i, w, rpcs[i])
			}
		}
	}

	sums := gather(t, metrics)
	for name, want := range map[string]float64{
		"ferry_active_uploads":               0,
		"ferry_chunk_duration_seconds":       1, // observations
		"ferry_rpcs_total":                   4,
		"ferry_rpc_errors_total":             2,
		"ferry_rpc_duration_seconds":         4,
		"ferry_received_bytes_total/minimum": float64(len(data)),
	} {
		name, minimum := strings.CutSuffix(name, "/minimum")
		got := sums[name]
		if got != want && !(minimum && got >= want) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

// gather sums every series of each metric: counter and gauge values,
// histogram observation counts.
func gather(t *testing.T, m *telemetry.Metrics) map[string]float64 {
	t.Helper()
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]float64{}
	for _, f := range families {
		for _, s := range f.GetMetric() {
			switch {
			case s.Counter != nil:
				sums[f.GetName()] += s.GetCounter().GetValue()
			case s.Gauge != nil:
				sums[f.GetName()] += s.GetGauge().GetValue()
			case s.Histogram != nil:
				sums[f.GetName()] += float64(s.GetHistogram().GetSampleCount())
			}
		}
	}
	return sums
}
