package upload_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/ferryhq/ferry/upload"
)

// losingTransport loses the answers of the next calls of procedures:
// the request reaches the server, which answers in full, and the client
// sees the connection break instead.
type losingTransport struct {
	base http.RoundTripper
	mu   sync.Mutex
	lose map[string]int // by procedure name: answers to lose
	seen map[string]int // calls, by procedure name
}

func (l *losingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	proc := req.URL.Path[strings.LastIndexByte(req.URL.Path, '/')+1:]
	l.mu.Lock()
	l.seen[proc]++
	lose := l.lose[proc] > 0
	if lose {
		l.lose[proc]--
	}
	l.mu.Unlock()
	resp, err := l.base.RoundTrip(req)
	if err != nil || !lose {
		return resp, err
	}
	_, _ = io.Copy(io.Discard, resp.Body) // the server is done
	resp.Body.Close()
	return nil, io.ErrUnexpectedEOF
}

func (l *losingTransport) calls(proc string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen[proc]
}

// TestUploaderCompletionAnswerLost loses the answer of the completion of
// an IfNoneMatch upload (of several chunks, and of one): the Uploader's
// retry gets the object the first completion made, instead of NOT_FOUND,
// or ALREADY_EXISTS against its own object (issue 12, finding 10).
func TestUploaderCompletionAnswerLost(t *testing.T) {
	t.Parallel()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t)
			for _, size := range []int{3*chunk + 5, 1000} {
				lt := &losingTransport{lose: map[string]int{"CompleteUpload": 1}, seen: map[string]int{}}
				client := srv.clientThrough(t, p.name, func(base http.RoundTripper) http.RoundTripper { lt.base = base; return lt })
				u := upload.NewUploader(client, upload.UploaderOptions{ChunkSize: chunk, Retry: fastRetry})
				data := randomBytes(uint64(size), size)
				key := "lost-" + p.name
				if size < chunk {
					key += "-small"
				}
				obj, err := u.Upload(context.Background(), key, bytes.NewReader(data), int64(len(data)), upload.ObjectOptions{IfNoneMatch: true})
				if err != nil {
					t.Fatalf("%d bytes: Upload whose completion's answer was lost: %v", size, err)
				}
				checkObject(t, srv, obj, key, data)
				if n := lt.calls("CompleteUpload"); n != 2 {
					t.Errorf("%d bytes: %d CompleteUpload calls, want the lost one and its retry", size, n)
				}
			}
		})
	}
}

// TestUploaderResumeCompleted resumes an upload that is completed already
// (as after a process killed between the server's completion and its
// answer): nothing is sent, and the object is returned once the data is
// checked against it; other data is ErrObjectMismatch.
func TestUploaderResumeCompleted(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	data := randomBytes(9, 3*chunk+7)
	var id string
	u := upload.NewUploader(srv.client(t, "grpc", nil), upload.UploaderOptions{ChunkSize: chunk, Created: func(s string) { id = s }})
	first, err := u.Upload(context.Background(), "done", bytes.NewReader(data), int64(len(data)), upload.ObjectOptions{IfNoneMatch: true})
	if err != nil {
		t.Fatal(err)
	}
	_, before := srv.store.writes()
	var progress int64
	resumer := upload.NewUploader(srv.client(t, "connect", nil), upload.UploaderOptions{Progress: func(done, total int64) { progress = done }})
	obj, err := resumer.Resume(context.Background(), id, bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatalf("Resume of a completed upload: %v", err)
	}
	if obj.GetEtag() != first.GetEtag() {
		t.Errorf("Resume returned %v, want the object the upload made, %v", obj, first)
	}
	if _, after := srv.store.writes(); after != before {
		t.Errorf("Resume of a completed upload wrote %d parts, want none", after-before)
	}
	if progress != int64(len(data)) {
		t.Errorf("progress ended at %d, want %d", progress, len(data))
	}
	other := bytes.Clone(data)
	other[len(other)-1] ^= 1
	if _, err := resumer.Resume(context.Background(), id, bytes.NewReader(other), int64(len(other))); !errors.Is(err, upload.ErrObjectMismatch) {
		t.Errorf("Resume of a completed upload with other data: %v, want ErrObjectMismatch", err)
	}
}

// TestUploaderCompletionOutlastsRetries loses the answers of 10
// CompleteUpload calls in a row, more than the 8 attempts any other call
// gets: with the default MaxAttempts, completion is tried up to 16 times,
// so the upload completes, with the object the first call made.
func TestUploaderCompletionOutlastsRetries(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	lt := &losingTransport{lose: map[string]int{"CompleteUpload": 10}, seen: map[string]int{}}
	client := srv.clientThrough(t, "grpc", func(base http.RoundTripper) http.RoundTripper { lt.base = base; return lt })
	u := upload.NewUploader(client, upload.UploaderOptions{ChunkSize: chunk, Retry: fastRetry})
	data := randomBytes(31, 2*chunk+3)
	obj, err := u.Upload(context.Background(), "patient", bytes.NewReader(data), int64(len(data)), upload.ObjectOptions{})
	if err != nil {
		t.Fatalf("Upload with 10 completion answers lost: %v", err)
	}
	checkObject(t, srv, obj, "patient", data)
	if n := lt.calls("CompleteUpload"); n != 11 {
		t.Errorf("%d CompleteUpload calls, want the 10 lost and the one answered", n)
	}
	// An explicit MaxAttempts is honoured.
	lt = &losingTransport{lose: map[string]int{"CompleteUpload": 10}, seen: map[string]int{}}
	client = srv.clientThrough(t, "grpc", func(base http.RoundTripper) http.RoundTripper { lt.base = base; return lt })
	strict := fastRetry
	strict.MaxAttempts = 3
	u = upload.NewUploader(client, upload.UploaderOptions{ChunkSize: chunk, Retry: strict})
	if _, err := u.Upload(context.Background(), "strict", bytes.NewReader(data), int64(len(data)), upload.ObjectOptions{}); err == nil {
		t.Error("Upload with MaxAttempts 3 and 10 completion answers lost succeeded")
	}
	if n := lt.calls("CompleteUpload"); n != 3 {
		t.Errorf("%d CompleteUpload calls with MaxAttempts 3, want 3", n)
	}
}
