package s3store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/ferryhq/ferry/store"
)

// halfWrittenPart is a transport that rewrites the answers to
// ListObjectParts so that part number `part` is listed as distributed MinIO
// lists a part whose write has not reached its read quorum (see
// uncommittedPart): ETag `""`, size 0, a zero time and no checksum, the
// bytes MinIO's generateListPartsResponse writes for it. Every other answer
// passes as it is.
type halfWrittenPart struct {
	rt       http.RoundTripper
	part     int
	active   atomic.Bool
	rewrites atomic.Int32
}

var partElement = regexp.MustCompile(`(?s)<Part>.*?</Part>`)

func (h *halfWrittenPart) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := h.rt.RoundTrip(req)
	q := req.URL.Query()
	if err != nil || !h.active.Load() || req.Method != http.MethodGet || !q.Has("uploadId") || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	number := "<PartNumber>" + strconv.Itoa(h.part) + "</PartNumber>"
	body = partElement.ReplaceAllFunc(body, func(p []byte) []byte {
		if !bytes.Contains(p, []byte(number)) {
			return p
		}
		h.rewrites.Add(1)
		return []byte("<Part>" + number + "<LastModified>0001-01-01T00:00:00.000Z</LastModified><ETag>&#34;&#34;</ETag><Size>0</Size></Part>")
	})
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Del("Content-Length")
	return resp, nil
}

// TestListPartsUncommitted: a part listed without an ETag (a write of that
// part number in flight) makes ListParts, and a completion that lists the
// parts itself, fail with store.ErrConflict, which callers retry, and not
// with an error of their own that the upload service would answer as
// internal. Listing again once the part is readable answers as usual, and
// the upload completes with the part's bytes.
func TestListPartsUncommitted(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.CreateBucket = true
	h := &halfWrittenPart{part: 2}
	s, err := open(t.Context(), cfg, func(rt http.RoundTripper) http.RoundTripper {
		h.rt = rt
		return h
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeBucket(t, s) })
	ctx := t.Context()
	const key = "half/written"
	id, err := s.CreateMultipartUpload(ctx, key, store.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	first := bytes.Repeat([]byte{'a'}, store.MinPartSize)
	second := []byte("the last part")
	p1, err := s.UploadPart(ctx, key, id, 1, bytes.NewReader(first), int64(len(first)), store.CRC32C(first))
	if err != nil {
		t.Fatal(err)
	}
	p2, err := s.UploadPart(ctx, key, id, 2, bytes.NewReader(second), int64(len(second)), store.CRC32C(second))
	if err != nil {
		t.Fatal(err)
	}
	crc := store.CombineCRC32C(store.CRC32C(first), store.CRC32C(second), int64(len(second)))

	h.active.Store(true)
	for _, marker := range []int{0, 1} {
		_, err := s.ListParts(ctx, key, id, marker, 1000)
		if !errors.Is(err, store.ErrConflict) {
			t.Errorf("ListParts(marker %d) with part 2 listed without an ETag = %v, want ErrConflict", marker, err)
		}
	}
	// Part 1 alone, on a page that ends before part 2, is answered.
	res, err := s.ListParts(ctx, key, id, 0, 1)
	if err != nil || len(res.Parts) != 1 || res.Parts[0].ETag != p1.ETag {
		t.Errorf("ListParts(maxParts 1) = %+v, %v; want part 1 alone", res, err)
	}
	_, err = s.CompleteMultipartUpload(ctx, key, id, []store.Part{p1, p2}, store.CompleteOptions{CRC32C: crc})
	if !errors.Is(err, store.ErrConflict) {
		t.Errorf("CompleteMultipartUpload with part 2 listed without an ETag = %v, want ErrConflict", err)
	}
	if h.rewrites.Load() == 0 {
		t.Fatal("the test transport rewrote no listing")
	}
	if _, err := s.StatObject(ctx, key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("StatObject after the refused completion = %v, want ErrNotFound", err)
	}

	// The write finished: the same calls succeed.
	h.active.Store(false)
	parts, err := s.allParts(ctx, key, id)
	if err != nil || len(parts) != 2 || parts[2].ETag != p2.ETag || parts[2].CRC32C != p2.CRC32C {
		t.Fatalf("allParts once part 2 is readable = %v, %v; want parts 1 and 2 as uploaded", parts, err)
	}
	info, err := s.CompleteMultipartUpload(ctx, key, id, []store.Part{p1, p2}, store.CompleteOptions{CRC32C: crc})
	if err != nil {
		t.Fatalf("CompleteMultipartUpload once part 2 is readable = %v", err)
	}
	if want := int64(len(first) + len(second)); info.Size != want || info.CRC32C != crc {
		t.Errorf("completed object = %+v, want %d bytes with CRC32C %08x", info, want, crc)
	}
}

// TestListPartsForeign: a part with an ETag but no CRC32C (an upload made
// without ferry's checksum settings) is still refused as not this store's,
// and that error is not ErrConflict: listing again would not help.
func TestListPartsForeign(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := t.Context()
	const key = "foreign"
	// An upload created by another client, without a checksum algorithm.
	id, err := s.core.NewMultipartUpload(ctx, s.bucket, key, minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("no checksum")
	if _, err := s.core.PutObjectPart(ctx, s.bucket, key, id, 1, bytes.NewReader(data), int64(len(data)), minio.PutObjectPartOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = s.ListParts(ctx, key, id, 0, 1000)
	if err == nil || errors.Is(err, store.ErrConflict) {
		t.Fatalf("ListParts of a part without CRC32C = %v, want an error that is not ErrConflict", err)
	}
	if want := fmt.Sprintf("part %d has no CRC32C", 1); !bytes.Contains([]byte(err.Error()), []byte(want)) {
		t.Errorf("ListParts of a part without CRC32C = %q, want it to say %q", err, want)
	}
}
