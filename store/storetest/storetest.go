// Package storetest is the conformance suite for [store.Store]
// implementations: one test per clause of the contracts in package store,
// run the same way against every implementation, so that code tested
// against the disk store behaves the same on S3.
//
// An implementation's test calls [Run]:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store {
//			s, err := diskstore.New(t.TempDir())
//			if err != nil {
//				t.Fatal(err)
//			}
//			return s
//		})
//	}
//
// Every subtest runs in parallel with the others and writes only keys
// under its own prefix ("storetest/<run>/<subtest>/", where <run> is random
// per call of Run), so newStore may return a new empty store each time or
// the same store (one S3 bucket) every time, and a suite may be run again
// against a bucket that an earlier run left objects in.
//
// The suite keeps data small: parts of exactly [store.MinPartSize] bytes are
// written only where S3's rules need a non-last part, six in all, so
// it runs in seconds against a local MinIO server.
package storetest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	mathrand "math/rand/v2"
	"testing"
	"time"

	"github.com/ferryhq/ferry/store"
)

// Run runs the conformance suite against the stores newStore returns.
// newStore is called once per top-level subtest, from that subtest's
// goroutine; it may fail the test (t.Fatal) when the store cannot be made,
// and it should register any cleanup with t.Cleanup.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Helper()
	run := randomHex(6)
	tests := []struct {
		name string
		fn   func(t *testing.T, e env)
	}{
		{"MultipartRoundTrip", testMultipartRoundTrip},
		{"EmptyObject", testEmptyObject},
		{"PartsOutOfOrderAndReplaced", testPartsOutOfOrderAndReplaced},
		{"UploadPartChecksumMismatch", testUploadPartChecksumMismatch},
		{"UploadPartBadReader", testUploadPartBadReader},
		{"UploadPartConcurrentWriters", testUploadPartConcurrentWriters},
		{"UploadPartOutOfRange", testUploadPartOutOfRange},
		{"ListPartsPaging", testListPartsPaging},
		{"CompleteInvalidPart", testCompleteInvalidPart},
		{"CompletePartsListed", testCompletePartsListed},
		{"CompleteIfNoneMatch", testCompleteIfNoneMatch},
		{"CompleteIfNoneMatchConcurrent", testCompleteIfNoneMatchConcurrent},
		{"NothingVisibleBeforeCompletion", testNothingVisibleBeforeCompletion},
		{"AbortMultipartUpload", testAbortMultipartUpload},
		{"CompletedUploadIsGone", testCompletedUploadIsGone},
		{"ListMultipartUploads", testListMultipartUploads},
		{"UnknownUploadID", testUnknownUploadID},
		{"PutObjectRoundTrip", testPutObjectRoundTrip},
		{"PutObjectBadReader", testPutObjectBadReader},
		{"PutObjectIfNoneMatch", testPutObjectIfNoneMatch},
		{"PutObjectIfNoneMatchConcurrent", testPutObjectIfNoneMatchConcurrent},
		{"PutObjectChecksum", testPutObjectChecksum},
		{"ReadObjectRanges", testReadObjectRanges},
		{"ReadObjectIfMatch", testReadObjectIfMatch},
		{"MissingObject", testMissingObject},
		{"DeleteObject", testDeleteObject},
		{"ListObjects", testListObjects},
		{"MetadataAndContentType", testMetadataAndContentType},
		{"OverwriteChangesETag", testOverwriteChangesETag},
		{"LongKey", testLongKey},
		{"Keys", testKeys},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, env{s: newStore(t), prefix: "storetest/" + run + "/" + tt.name + "/"})
		})
	}
}

// env is what a subtest works with: the store under test and the key
// prefix that keeps the subtest's objects apart from every other's.
type env struct {
	s      store.Store
	prefix string
}

// key returns the key name under the subtest's prefix.
func (e env) key(name string) string { return e.prefix + name }

// sub returns an env for a nested subtest, with its own prefix.
func (e env) sub(name string) env { return env{s: e.s, prefix: e.prefix + name + "/"} }

// testData returns n pseudo-random bytes, the same for the same seed.
func testData(seed uint64, n int) []byte {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	b := make([]byte, n)
	_, _ = mathrand.NewChaCha8(s).Read(b)
	return b
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// fullCRC32C returns the full-object CRC32C of parts in order, combined from
// the parts' CRCs the way ferry's upload service does it.
func fullCRC32C(parts ...[]byte) uint32 {
	var crc uint32
	for _, p := range parts {
		crc = store.CombineCRC32C(crc, store.CRC32C(p), int64(len(p)))
	}
	return crc
}

func (e env) createUpload(t *testing.T, key string, opts store.CreateOptions) string {
	t.Helper()
	id, err := e.s.CreateMultipartUpload(t.Context(), key, opts)
	if err != nil {
		t.Fatalf("CreateMultipartUpload(%q) = %v", key, err)
	}
	if id == "" {
		t.Fatalf("CreateMultipartUpload(%q) returned an empty upload ID", key)
	}
	return id
}

// uploadPart stores data as part number and checks the returned Part.
func (e env) uploadPart(t *testing.T, key, uploadID string, number int, data []byte) store.Part {
	t.Helper()
	p, err := e.s.UploadPart(t.Context(), key, uploadID, number, bytes.NewReader(data), int64(len(data)), store.CRC32C(data))
	if err != nil {
		t.Fatalf("UploadPart(part %d, %d bytes) = %v", number, len(data), err)
	}
	if p.Number != number || p.Size != int64(len(data)) || p.CRC32C != store.CRC32C(data) || p.ETag == "" {
		t.Fatalf("UploadPart(part %d, %d bytes, CRC32C %08x) returned %+v, want that number, size, CRC32C and an ETag",
			number, len(data), store.CRC32C(data), p)
	}
	return p
}

func (e env) complete(t *testing.T, key, uploadID string, parts []store.Part, opts store.CompleteOptions) store.ObjectInfo {
	t.Helper()
	info, err := e.s.CompleteMultipartUpload(t.Context(), key, uploadID, parts, opts)
	if err != nil {
		t.Fatalf("CompleteMultipartUpload(%q, %d parts) = %v", key, len(parts), err)
	}
	return info
}

// multipart writes data as a multipart upload of one part per element of
// parts and completes it.
func (e env) multipart(t *testing.T, key string, opts store.CreateOptions, parts ...[]byte) store.ObjectInfo {
	t.Helper()
	id := e.createUpload(t, key, opts)
	var done []store.Part
	for i, p := range parts {
		done = append(done, e.uploadPart(t, key, id, i+1, p))
	}
	return e.complete(t, key, id, done, store.CompleteOptions{CRC32C: fullCRC32C(parts...)})
}

func (e env) put(t *testing.T, key string, data []byte, opts store.PutOptions) store.ObjectInfo {
	t.Helper()
	info, err := e.s.PutObject(t.Context(), key, bytes.NewReader(data), int64(len(data)), opts)
	if err != nil {
		t.Fatalf("PutObject(%q, %d bytes) = %v", key, len(data), err)
	}
	return info
}

func (e env) stat(t *testing.T, key string) store.ObjectInfo {
	t.Helper()
	info, err := e.s.StatObject(t.Context(), key)
	if err != nil {
		t.Fatalf("StatObject(%q) = %v", key, err)
	}
	return info
}

// read reads the range [offset, offset+length) of an object to its end.
func (e env) read(t *testing.T, key string, offset, length int64, opts store.ReadOptions) ([]byte, store.ObjectInfo) {
	t.Helper()
	rc, info, err := e.s.ReadObject(t.Context(), key, offset, length, opts)
	if err != nil {
		t.Fatalf("ReadObject(%q, %d, %d) = %v", key, offset, length, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading ReadObject(%q, %d, %d): %v", key, offset, length, err)
	}
	if err := rc.Close(); err != nil {
		t.Fatalf("closing ReadObject(%q, %d, %d): %v", key, offset, length, err)
	}
	return b, info
}

// listParts returns every committed part of an upload, paging with
// maxParts 1000.
func (e env) listParts(t *testing.T, key, uploadID string) []store.Part {
	t.Helper()
	var parts []store.Part
	marker := 0
	for {
		res, err := e.s.ListParts(t.Context(), key, uploadID, marker, 1000)
		if err != nil {
			t.Fatalf("ListParts(%q, marker %d) = %v", key, marker, err)
		}
		parts = append(parts, res.Parts...)
		if !res.IsTruncated {
			return parts
		}
		marker = res.NextPartNumberMarker
	}
}

// wantParts checks that got holds the parts of want, in order, by number,
// size, ETag and CRC32C.
func wantParts(t *testing.T, what string, got, want []store.Part) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d parts %v, want %d %v", what, len(got), partNumbers(got), len(want), partNumbers(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Number != w.Number || g.Size != w.Size || g.ETag != w.ETag || g.CRC32C != w.CRC32C {
			t.Errorf("%s: part %d is {Number %d Size %d ETag %q CRC32C %08x}, want {Number %d Size %d ETag %q CRC32C %08x}",
				what, i, g.Number, g.Size, g.ETag, g.CRC32C, w.Number, w.Size, w.ETag, w.CRC32C)
		}
		if g.LastModified.IsZero() {
			t.Errorf("%s: part %d has no LastModified", what, g.Number)
		}
	}
}

func partNumbers(parts []store.Part) []int {
	n := make([]int, len(parts))
	for i, p := range parts {
		n[i] = p.Number
	}
	return n
}

// wantBytes compares data without printing megabytes of it.
func wantBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	t.Errorf("%s: got %d bytes, want %d; first difference at byte %d", what, len(got), len(want), i)
}

// wantErr fails the test unless errors.Is(err, target).
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s = %v, want %v", what, err, target)
	}
}

// wantObject checks that the object under key has exactly data and the
// attributes of want (from the call that wrote it), through both
// StatObject and ReadObject.
func (e env) wantObject(t *testing.T, key string, data []byte, want store.ObjectInfo) {
	t.Helper()
	st := e.stat(t, key)
	got, rinfo := e.read(t, key, 0, -1, store.ReadOptions{})
	wantBytes(t, "ReadObject("+key+")", got, data)
	for _, c := range []struct {
		what string
		info store.ObjectInfo
	}{{"StatObject", st}, {"ReadObject", rinfo}} {
		info := c.info
		if info.Key != key {
			t.Errorf("%s(%q).Key = %q", c.what, key, info.Key)
		}
		if info.Size != int64(len(data)) {
			t.Errorf("%s(%q).Size = %d, want %d", c.what, key, info.Size, len(data))
		}
		if info.ETag == "" || info.ETag != want.ETag {
			t.Errorf("%s(%q).ETag = %q, want %q (the ETag the write returned)", c.what, key, info.ETag, want.ETag)
		}
		if d := time.Since(info.LastModified); info.LastModified.IsZero() || d < -time.Hour || d > time.Hour {
			t.Errorf("%s(%q).LastModified = %v, want about now", c.what, key, info.LastModified)
		}
		if want.HasCRC32C && (!info.HasCRC32C || info.CRC32C != want.CRC32C) {
			t.Errorf("%s(%q) CRC32C = %08x (HasCRC32C %v), want %08x", c.what, key, info.CRC32C, info.HasCRC32C, want.CRC32C)
		}
	}
	if want.Size != int64(len(data)) {
		t.Errorf("the write of %q returned Size %d, want %d", key, want.Size, len(data))
	}
}

// errReader yields data and then fails with errBroken.
type errReader struct{ r io.Reader }

var errBroken = errors.New("storetest: reader broken on purpose")

// errShort is what the failure of a write from a reader that ends before
// its declared size wraps.
var errShort = []error{store.ErrSizeMismatch, io.ErrUnexpectedEOF}

func (r *errReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err == io.EOF {
		return n, errBroken
	}
	return n, err
}
