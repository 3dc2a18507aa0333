package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/store"
	"github.com/google/uuid"
)

// testMultipartRoundTrip: several parts, the non-last ones of exactly
// MinPartSize, come back byte for byte, with the full-object CRC32C given
// at completion.
func testMultipartRoundTrip(t *testing.T, e env) {
	key := e.key("object")
	parts := [][]byte{testData(1, store.MinPartSize), testData(2, store.MinPartSize), testData(3, 1000)}
	info := e.multipart(t, key, store.CreateOptions{}, parts...)
	want := fullCRC32C(parts...)
	if info.Key != key || info.ETag == "" {
		t.Errorf("CompleteMultipartUpload returned Key %q ETag %q, want Key %q and an ETag", info.Key, info.ETag, key)
	}
	if info.HasCRC32C && info.CRC32C != want {
		t.Errorf("CompleteMultipartUpload returned CRC32C %08x, want %08x", info.CRC32C, want)
	}
	info.CRC32C, info.HasCRC32C = want, true // StatObject and ReadObject must have it.
	e.wantObject(t, key, bytes.Join(parts, nil), info)
}

// testEmptyObject: an object of one 0-byte part.
func testEmptyObject(t *testing.T, e env) {
	key := e.key("empty")
	info := e.multipart(t, key, store.CreateOptions{}, []byte{})
	info.CRC32C, info.HasCRC32C = 0, true // the CRC32C of no bytes
	e.wantObject(t, key, nil, info)
}

// testPartsOutOfOrderAndReplaced: parts uploaded last first, one of them
// uploaded again with other bytes; the object has the second version, and
// the first version's ETag no longer completes.
func testPartsOutOfOrderAndReplaced(t *testing.T, e env) {
	key := e.key("object")
	id := e.createUpload(t, key, store.CreateOptions{})
	p1, p2, p3 := testData(11, store.MinPartSize), testData(12, store.MinPartSize), testData(13, 777)
	got3 := e.uploadPart(t, key, id, 3, p3)
	old2 := e.uploadPart(t, key, id, 2, testData(99, store.MinPartSize))
	got1 := e.uploadPart(t, key, id, 1, p1)
	got2 := e.uploadPart(t, key, id, 2, p2)
	if got2.ETag == old2.ETag {
		t.Fatalf("part 2 uploaded again with other bytes kept ETag %q", got2.ETag)
	}
	wantParts(t, "ListParts after replacing part 2", e.listParts(t, key, id), []store.Part{got1, got2, got3})

	crc := fullCRC32C(p1, p2, p3)
	_, err := e.s.CompleteMultipartUpload(t.Context(), key, id, []store.Part{got1, old2, got3}, store.CompleteOptions{CRC32C: crc})
	wantErr(t, "CompleteMultipartUpload naming the replaced part's ETag", err, store.ErrInvalidPart)

	info := e.complete(t, key, id, []store.Part{got1, got2, got3}, store.CompleteOptions{CRC32C: crc})
	info.CRC32C, info.HasCRC32C = crc, true
	e.wantObject(t, key, bytes.Join([][]byte{p1, p2, p3}, nil), info)
}

// testUploadPartChecksumMismatch: a part whose bytes do not match the
// CRC32C given is refused, and an earlier part with its number stays.
func testUploadPartChecksumMismatch(t *testing.T, e env) {
	key := e.key("object")
	id := e.createUpload(t, key, store.CreateOptions{})
	good := testData(21, 4096)
	p1 := e.uploadPart(t, key, id, 1, good)

	bad := testData(22, 4096)
	_, err := e.s.UploadPart(t.Context(), key, id, 1, bytes.NewReader(bad), int64(len(bad)), store.CRC32C(bad)^1)
	wantErr(t, "UploadPart(part 1 again, wrong CRC32C)", err, store.ErrChecksumMismatch)
	_, err = e.s.UploadPart(t.Context(), key, id, 2, bytes.NewReader(bad), int64(len(bad)), store.CRC32C(good))
	wantErr(t, "UploadPart(new part 2, another part's CRC32C)", err, store.ErrChecksumMismatch)

	wantParts(t, "ListParts after refused parts", e.listParts(t, key, id), []store.Part{p1})
	info := e.complete(t, key, id, []store.Part{p1}, store.CompleteOptions{CRC32C: store.CRC32C(good)})
	e.wantObject(t, key, good, info)
}

// testUploadPartBadReader: a reader that fails (the error wraps the
// reader's), ends early (ErrSizeMismatch and io.ErrUnexpectedEOF) or
// yields more than size bytes (ErrSizeMismatch) stores nothing, and leaves
// an earlier part as it was.
func testUploadPartBadReader(t *testing.T, e env) {
	const size = 64 << 10
	tests := []struct {
		name string
		// reader returns what UploadPart reads, given the size bytes that
		// are declared.
		reader func(data []byte) io.Reader
		// wantErrs are the errors the failure must wrap.
		wantErrs []error
	}{
		{"FailsMidway", func(data []byte) io.Reader { return &errReader{bytes.NewReader(data[:size/2])} }, []error{errBroken}},
		{"FailsAtOnce", func(data []byte) io.Reader { return &errReader{bytes.NewReader(nil)} }, []error{errBroken}},
		{"Short", func(data []byte) io.Reader { return bytes.NewReader(data[:size-1]) }, errShort},
		{"Empty", func(data []byte) io.Reader { return bytes.NewReader(nil) }, errShort},
		{"Long", func(data []byte) io.Reader {
			return io.MultiReader(bytes.NewReader(data), bytes.NewReader([]byte("extra")))
		}, []error{store.ErrSizeMismatch}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := e.sub(tt.name)
			key := e.key("object")
			id := e.createUpload(t, key, store.CreateOptions{})
			good := testData(31, size)
			p1 := e.uploadPart(t, key, id, 1, good)

			data := testData(32, size)
			for _, number := range []int{1, 2} {
				_, err := e.s.UploadPart(t.Context(), key, id, number, tt.reader(data), size, store.CRC32C(data))
				for _, want := range tt.wantErrs {
					wantErr(t, fmt.Sprintf("UploadPart(part %d) from a bad reader", number), err, want)
				}
			}
			wantParts(t, "ListParts after failed uploads", e.listParts(t, key, id), []store.Part{p1})
			info := e.complete(t, key, id, []store.Part{p1}, store.CompleteOptions{CRC32C: store.CRC32C(good)})
			e.wantObject(t, key, good, info)
		})
	}
}

// testUploadPartConcurrentWriters: several writers of one part number at
// once leave exactly one writer's bytes, whole.
func testUploadPartConcurrentWriters(t *testing.T, e env) {
	const writers, size = 4, 512 << 10
	key := e.key("object")
	id := e.createUpload(t, key, store.CreateOptions{})
	data := make([][]byte, writers)
	results := make([]store.Part, writers)
	errs := make([]error, writers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range writers {
		data[i] = testData(uint64(40+i), size)
		wg.Go(func() {
			<-start
			results[i], errs[i] = e.s.UploadPart(t.Context(), key, id, 1, bytes.NewReader(data[i]), size, store.CRC32C(data[i]))
		})
	}
	close(start)
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrConflict):
			t.Errorf("writer %d: UploadPart = %v, want success or ErrConflict", i, err)
		}
	}
	if ok == 0 {
		t.Fatal("no concurrent writer of part 1 succeeded")
	}

	parts := e.listParts(t, key, id)
	if len(parts) != 1 || parts[0].Number != 1 {
		t.Fatalf("ListParts = parts %v, want [1]", partNumbers(parts))
	}
	winner := -1
	for i := range writers {
		if errs[i] == nil && parts[0].ETag == results[i].ETag && parts[0].CRC32C == store.CRC32C(data[i]) {
			winner = i
		}
	}
	if winner < 0 {
		t.Fatalf("ListParts part 1 = %+v, which is no successful writer's part", parts[0])
	}
	info := e.complete(t, key, id, parts, store.CompleteOptions{CRC32C: parts[0].CRC32C})
	e.wantObject(t, key, data[winner], info)
}

// testUploadPartOutOfRange: part numbers outside 1 to MaxParts and sizes
// outside 0 to MaxPartSize are ErrInvalidPart and store nothing, on an
// open upload and on an unknown one (the range is checked first).
func testUploadPartOutOfRange(t *testing.T, e env) {
	key := e.key("object")
	id := e.createUpload(t, key, store.CreateOptions{})
	data := []byte("part")
	for _, uploadID := range []string{id, uuid.NewString()} {
		for _, n := range []int{0, -1, store.MaxParts + 1} {
			_, err := e.s.UploadPart(t.Context(), key, uploadID, n, bytes.NewReader(data), int64(len(data)), store.CRC32C(data))
			wantErr(t, fmt.Sprintf("UploadPart(part %d)", n), err, store.ErrInvalidPart)
		}
		for _, size := range []int64{-1, store.MaxPartSize + 1} {
			// The reader has 4 bytes: a store must refuse the size before
			// it reads or sends anything.
			_, err := e.s.UploadPart(t.Context(), key, uploadID, 1, bytes.NewReader(data), size, store.CRC32C(data))
			wantErr(t, fmt.Sprintf("UploadPart(part 1, size %d)", size), err, store.ErrInvalidPart)
		}
	}
	if parts := e.listParts(t, key, id); len(parts) != 0 {
		t.Errorf("ListParts = parts %v, want none", partNumbers(parts))
	}
	e.uploadPart(t, key, id, store.MaxParts, data) // the highest number is fine
	if err := e.s.AbortMultipartUpload(t.Context(), key, id); err != nil {
		t.Errorf("AbortMultipartUpload = %v", err)
	}
}

// testListPartsPaging: pages of maxParts parts, in ascending number,
// following the marker, with IsTruncated false exactly on the last page.
func testListPartsPaging(t *testing.T, e env) {
	key := e.key("object")
	id := e.createUpload(t, key, store.CreateOptions{})
	want := make([]store.Part, 7)
	for _, n := range []int{4, 7, 1, 3, 6, 2, 5} { // any order
		want[n-1] = e.uploadPart(t, key, id, n, testData(uint64(50+n), 100+n))
	}
	tests := []struct {
		marker, maxParts int
		want             []store.Part
		truncated        bool
	}{
		{0, 3, want[0:3], true},
		{3, 3, want[3:6], true},
		{6, 3, want[6:7], false},
		{4, 3, want[4:7], false}, // exactly the rest: not truncated
		{2, 1000, want[2:7], false},
		{0, 1, want[0:1], true},
		{7, 3, nil, false},
		{100, 3, nil, false},
	}
	for _, tt := range tests {
		res, err := e.s.ListParts(t.Context(), key, id, tt.marker, tt.maxParts)
		if err != nil {
			t.Fatalf("ListParts(marker %d, maxParts %d) = %v", tt.marker, tt.maxParts, err)
		}
		what := fmt.Sprintf("ListParts(marker %d, maxParts %d)", tt.marker, tt.maxParts)
		wantParts(t, what, res.Parts, tt.want)
		if res.IsTruncated != tt.truncated {
			t.Errorf("%s.IsTruncated = %v, want %v", what, res.IsTruncated, tt.truncated)
		}
		if tt.truncated && res.NextPartNumberMarker != tt.want[len(tt.want)-1].Number {
			t.Errorf("%s.NextPartNumberMarker = %d, want %d", what, res.NextPartNumberMarker, tt.want[len(tt.want)-1].Number)
		}
	}
	// Walking the pages by their markers visits every part once.
	var got []store.Part
	marker := 0
	for range 10 {
		res, err := e.s.ListParts(t.Context(), key, id, marker, 2)
		if err != nil {
			t.Fatalf("ListParts(marker %d, maxParts 2) = %v", marker, err)
		}
		got = append(got, res.Parts...)
		if !res.IsTruncated {
			break
		}
		marker = res.NextPartNumberMarker
	}
	wantParts(t, "ListParts pages of 2", got, want)
}

// testCompleteInvalidPart: completion naming a missing part, a wrong ETag
// or size, parts out of order, or a non-last part under MinPartSize fails
// with ErrInvalidPart, shows nothing under the key and leaves the upload
// open. Each case has one fault only: S3 lets completion name any
// ascending subset of the committed parts, and only non-last parts must be
// MinPartSize bytes.
func testCompleteInvalidPart(t *testing.T, e env) {
	tests := []struct {
		name string
		// big2 makes part 2 MinPartSize bytes instead of 2000.
		big2 bool
		// parts returns the parts named at completion, given the two
		// committed ones (1000 bytes, then 2000 or MinPartSize bytes).
		parts func(p1, p2 store.Part) []store.Part
	}{
		{"MissingPart", false, func(p1, p2 store.Part) []store.Part {
			return []store.Part{{Number: 3, Size: p2.Size, ETag: p2.ETag, CRC32C: p2.CRC32C}}
		}},
		{"WrongETag", false, func(p1, p2 store.Part) []store.Part {
			p2.ETag = p1.ETag
			return []store.Part{p2}
		}},
		{"WrongSize", false, func(p1, p2 store.Part) []store.Part {
			p2.Size++
			return []store.Part{p2}
		}},
		{"PartsOutOfOrder", true, func(p1, p2 store.Part) []store.Part { return []store.Part{p2, p1} }},
		{"SmallNonLastPart", false, func(p1, p2 store.Part) []store.Part { return []store.Part{p1, p2} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := e.sub(tt.name)
			key := e.key("object")
			id := e.createUpload(t, key, store.CreateOptions{})
			d1, d2 := testData(61, 1000), testData(62, 2000)
			if tt.big2 {
				d2 = testData(63, store.MinPartSize)
			}
			p1 := e.uploadPart(t, key, id, 1, d1)
			p2 := e.uploadPart(t, key, id, 2, d2)
			_, err := e.s.CompleteMultipartUpload(t.Context(), key, id, tt.parts(p1, p2), store.CompleteOptions{CRC32C: fullCRC32C(d1, d2)})
			wantErr(t, "CompleteMultipartUpload", err, store.ErrInvalidPart)
			_, err = e.s.StatObject(t.Context(), key)
			wantErr(t, "StatObject after failed completion", err, store.ErrNotFound)
			wantParts(t, "ListParts after failed completion", e.listParts(t, key, id), []store.Part{p1, p2})
			if err := e.s.AbortMultipartUpload(t.Context(), key, id); err != nil {
				t.Errorf("AbortMultipartUpload = %v", err)
			}
		})
	}
}

// testCompletePartsListed: completion with PartsListed and the parts
// ListParts returned makes the object; a part replaced after the listing
// (so its ETag and CRC32C differ) is still refused with ErrInvalidPart and
// nothing becomes visible.
func testCompletePartsListed(t *testing.T, e env) {
	key := e.key("listed")
	id := e.createUpload(t, key, store.CreateOptions{})
	d1, d2 := testData(64, store.MinPartSize), testData(65, 3000)
	e.uploadPart(t, key, id, 1, d1)
	e.uploadPart(t, key, id, 2, d2)
	parts := e.listParts(t, key, id)
	info, err := e.s.CompleteMultipartUpload(t.Context(), key, id, parts, store.CompleteOptions{CRC32C: fullCRC32C(d1, d2), PartsListed: true})
	if err != nil {
		t.Fatalf("CompleteMultipartUpload with PartsListed = %v", err)
	}
	e.wantObject(t, key, append(append([]byte{}, d1...), d2...), info)

	key = e.key("replaced")
	id = e.createUpload(t, key, store.CreateOptions{})
	e.uploadPart(t, key, id, 1, d1)
	e.uploadPart(t, key, id, 2, d2)
	parts = e.listParts(t, key, id)
	d2b := testData(66, 3000)
	e.uploadPart(t, key, id, 2, d2b) // replaced after the listing
	_, err = e.s.CompleteMultipartUpload(t.Context(), key, id, parts, store.CompleteOptions{CRC32C: fullCRC32C(d1, d2), PartsListed: true})
	wantErr(t, "CompleteMultipartUpload with PartsListed and a part replaced since", err, store.ErrInvalidPart)
	_, err = e.s.StatObject(t.Context(), key)
	wantErr(t, "StatObject after the refused completion", err, store.ErrNotFound)
	if err := e.s.AbortMultipartUpload(t.Context(), key, id); err != nil {
		t.Errorf("AbortMultipartUpload = %v", err)
	}
}

// testCompleteIfNoneMatch: a conditional completion fails when the key
// exists and leaves the object as it was, and succeeds when it does not.
func testCompleteIfNoneMatch(t *testing.T, e env) {
	key := e.key("exists")
	old := []byte("the object that was there first")
	oldInfo := e.put(t, key, old, store.PutOptions{})

	data := testData(71, 3000)
	id := e.createUpload(t, key, store.CreateOptions{})
	p := e.uploadPart(t, key, id, 1, data)
	_, err := e.s.CompleteMultipartUpload(t.Context(), key, id, []store.Part{p}, store.CompleteOptions{CRC32C: store.CRC32C(data), IfNoneMatch: true})
	wantErr(t, "conditional CompleteMultipartUpload on an existing key", err, store.ErrPreconditionFailed)
	e.wantObject(t, key, old, oldInfo)

	fresh := e.key("fresh")
	id = e.createUpload(t, fresh, store.CreateOptions{})
	p = e.uploadPart(t, fresh, id, 1, data)
	info := e.complete(t, fresh, id, []store.Part{p}, store.CompleteOptions{CRC32C: store.CRC32C(data), IfNoneMatch: true})
	info.CRC32C, info.HasCRC32C = store.CRC32C(data), true
	e.wantObject(t, fresh, data, info)
}

// testCompleteIfNoneMatchConcurrent: of several conditional completions
// of one new key at once, exactly one wins, and the object is its.
func testCompleteIfNoneMatchConcurrent(t *testing.T, e env) {
	const uploads = 4
	key := e.key("object")
	data := make([][]byte, uploads)
	ids := make([]string, uploads)
	parts := make([]store.Part, uploads)
	for i := range uploads {
		data[i] = testData(uint64(80+i), 10000+i)
		ids[i] = e.createUpload(t, key, store.CreateOptions{})
		parts[i] = e.uploadPart(t, key, ids[i], 1, data[i])
	}
	infos := make([]store.ObjectInfo, uploads)
	errs := make([]error, uploads)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range uploads {
		wg.Go(func() {
			<-start
			infos[i], errs[i] = e.s.CompleteMultipartUpload(t.Context(), key, ids[i], parts[i:i+1],
				store.CompleteOptions{CRC32C: store.CRC32C(data[i]), IfNoneMatch: true})
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("uploads %d and %d both completed with IfNoneMatch", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, store.ErrPreconditionFailed) && !errors.Is(err, store.ErrConflict):
			t.Errorf("upload %d: CompleteMultipartUpload = %v, want ErrPreconditionFailed or ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no conditional completion succeeded")
	}
	e.wantObject(t, key, data[winner], infos[winner])
}

// testNothingVisibleBeforeCompletion: an open upload shows nothing under its
// key, and leaves an existing object there as it was until it completes.
func testNothingVisibleBeforeCompletion(t *testing.T, e env) {
	key := e.key("new")
	data := testData(91, 5000)
	id := e.createUpload(t, key, store.CreateOptions{})
	p := e.uploadPart(t, key, id, 1, data)
	_, err := e.s.StatObject(t.Context(), key)
	wantErr(t, "StatObject of an open upload's key", err, store.ErrNotFound)
	_, _, err = e.s.ReadObject(t.Context(), key, 0, -1, store.ReadOptions{})
	wantErr(t, "ReadObject of an open upload's key", err, store.ErrNotFound)
	res, err := e.s.ListObjects(t.Context(), e.prefix, "", 1000)
	if err != nil {
		t.Fatalf("ListObjects = %v", err)
	}
	if len(res.Objects) != 0 {
		t.Errorf("ListObjects lists %d objects while the only upload is open, want none", len(res.Objects))
	}
	info := e.complete(t, key, id, []store.Part{p}, store.CompleteOptions{CRC32C: store.CRC32C(data)})
	e.wantObject(t, key, data, info)

	// An upload over an existing key leaves the old object until it completes.
	key = e.key("existing")
	old := []byte("old")
	oldInfo := e.put(t, key, old, store.PutOptions{})
	id = e.createUpload(t, key, store.CreateOptions{})
	p = e.uploadPart(t, key, id, 1, data)
	e.wantObject(t, key, old, oldInfo)
	info = e.complete(t, key, id, []store.Part{p}, store.CompleteOptions{CRC32C: store.CRC32C(data)})
	e.wantObject(t, key, data, info)
}

// testAbortMultipartUpload: after an abort, every call on the upload ID
// fails with ErrUploadNotFound, and nothing is under the key.
func testAbortMultipartUpload(t *testing.T, e env) {
	key := e.key("object")
	data := []byte("aborted")
	id := e.createUpload(t, key, store.CreateOptions{})
	p := e.uploadPart(t, key, id, 1, data)
	if err := e.s.AbortMultipartUpload(t.Context(), key, id); err != nil {
		t.Fatalf("AbortMultipartUpload = %v", err)
	}
	wantGone(t, e, key, id, p, data)
	_, err := e.s.StatObject(t.Context(), key)
	wantErr(t, "StatObject after abort", err, store.ErrNotFound)
}

// testCompletedUploadIsGone: after completion, the upload ID is unknown.
func testCompletedUploadIsGone(t *testing.T, e env) {
	key := e.key("object")
	data := []byte("completed")
	id := e.createUpload(t, key, store.CreateOptions{})
	p := e.uploadPart(t, key, id, 1, data)
	info := e.complete(t, key, id, []store.Part{p}, store.CompleteOptions{CRC32C: store.CRC32C(data)})
	_, err := e.s.ListParts(t.Context(), key, id, 0, 1000)
	wantErr(t, "ListParts after completion", err, store.ErrUploadNotFound)
	_, err = e.s.UploadPart(t.Context(), key, id, 2, bytes.NewReader(data), int64(len(data)), store.CRC32C(data))
	wantErr(t, "UploadPart after completion", err, store.ErrUploadNotFound)
	err = e.s.AbortMultipartUpload(t.Context(), key, id)
	wantErr(t, "AbortMultipartUpload after completion", err, store.ErrUploadNotFound)
	e.wantObject(t, key, data, info)
}

// wantGone checks that every multipart call on uploadID fails with
// ErrUploadNotFound.
func wantGone(t *testing.T, e env, key, uploadID string, p store.Part, data []byte) {
	t.Helper()
	_, err := e.s.UploadPart(t.Context(), key, uploadID, 1, bytes.NewReader(data), int64(len(data)), store.CRC32C(data))
	wantErr(t, "UploadPart", err, store.ErrUploadNotFound)
	_, err = e.s.ListParts(t.Context(), key, uploadID, 0, 1000)
	wantErr(t, "ListParts", err, store.ErrUploadNotFound)
	_, err = e.s.CompleteMultipartUpload(t.Context(), key, uploadID, []store.Part{p}, store.CompleteOptions{CRC32C: store.CRC32C(data)})
	wantErr(t, "CompleteMultipartUpload", err, store.ErrUploadNotFound)
	err = e.s.AbortMultipartUpload(t.Context(), key, uploadID)
	wantErr(t, "AbortMultipartUpload", err, store.ErrUploadNotFound)
}

// testUnknownUploadID: an upload ID that was never created, or that names
// an upload of another key, is unknown to every multipart call.
func testUnknownUploadID(t *testing.T, e env) {
	data := []byte("data")
	p := store.Part{Number: 1, Size: int64(len(data)), ETag: "d41d8cd98f00b204e9800998ecf8427e", CRC32C: store.CRC32C(data)}
	t.Run("NeverCreated", func(t *testing.T) {
		t.Parallel()
		wantGone(t, e, e.key("never"), uuid.NewString(), p, data)
	})
	t.Run("OtherKey", func(t *testing.T) {
		t.Parallel()
		key := e.key("mine")
		id := e.createUpload(t, key, store.CreateOptions{})
		p := e.uploadPart(t, key, id, 1, data)
		wantGone(t, e, e.key("other"), id, p, data)
		// The upload of key itself is untouched.
		wantParts(t, "ListParts of the right key", e.listParts(t, key, id), []store.Part{p})
		if err := e.s.AbortMultipartUpload(t.Context(), key, id); err != nil {
			t.Errorf("AbortMultipartUpload = %v", err)
		}
	})
}

// testListMultipartUploads: the open uploads of exactly one key are
// listed, oldest first, in pages; completed and aborted ones are not, nor
// those of keys that extend it or that it extends.
func testListMultipartUploads(t *testing.T, e env) {
	key := e.key("kk")
	before := time.Now()
	var ids []string
	for range 3 {
		ids = append(ids, e.createUpload(t, key, store.CreateOptions{}))
	}
	for _, other := range []string{e.key("kk2"), e.key("kk/x"), e.key("k")} {
		id := e.createUpload(t, other, store.CreateOptions{})
		t.Cleanup(func() { _ = e.s.AbortMultipartUpload(t.Context(), other, id) })
	}
	after := time.Now()
	list := func(max int) []store.MultipartUpload {
		t.Helper()
		var all []store.MultipartUpload
		marker := ""
		for page := 0; ; page++ {
			if page > 10 {
				t.Fatalf("ListMultipartUploads(maxUploads %d) returned more than 10 pages", max)
			}
			res, err := e.s.ListMultipartUploads(t.Context(), key, marker, max)
			if err != nil {
				t.Fatalf("ListMultipartUploads(%q, %q, %d) = %v", key, marker, max, err)
			}
			if len(res.Uploads) > max {
				t.Fatalf("ListMultipartUploads(maxUploads %d) returned %d uploads", max, len(res.Uploads))
			}
			all = append(all, res.Uploads...)
			if !res.IsTruncated {
				return all
			}
			marker = res.NextUploadIDMarker
		}
	}
	for _, max := range []int{1000, 1, 2} {
		got := list(max)
		var gotIDs []string
		for i, u := range got {
			gotIDs = append(gotIDs, u.UploadID)
			if u.Key != key {
				t.Errorf("ListMultipartUploads(%q) listed an upload of %q", key, u.Key)
			}
			// Clocks differ (S3's and this one): a minute of slack.
			if u.Initiated.Before(before.Add(-time.Minute)) || u.Initiated.After(after.Add(time.Minute)) {
				t.Errorf("upload %s initiated at %v, want between %v and %v", u.UploadID, u.Initiated, before, after)
			}
			if i > 0 && u.Initiated.Before(got[i-1].Initiated) {
				t.Errorf("uploads not oldest first: %v after %v", u.Initiated, got[i-1].Initiated)
			}
		}
		slices.Sort(gotIDs)
		want := slices.Sorted(slices.Values(ids))
		if !slices.Equal(gotIDs, want) {
			t.Errorf("ListMultipartUploads(%q, maxUploads %d) = %q, want %q", key, max, gotIDs, want)
		}
	}

	data := []byte("listed")
	p := e.uploadPart(t, key, ids[0], 1, data)
	e.complete(t, key, ids[0], []store.Part{p}, store.CompleteOptions{CRC32C: store.CRC32C(data)})
	if err := e.s.AbortMultipartUpload(t.Context(), key, ids[1]); err != nil {
		t.Fatalf("AbortMultipartUpload = %v", err)
	}
	if got := list(1000); len(got) != 1 || got[0].UploadID != ids[2] {
		t.Errorf("after a completion and an abort, ListMultipartUploads = %+v, want only %s", got, ids[2])
	}
	if err := e.s.AbortMultipartUpload(t.Context(), key, ids[2]); err != nil {
		t.Fatalf("AbortMultipartUpload = %v", err)
	}
	if got := list(1000); len(got) != 0 {
		t.Errorf("with no upload open, ListMultipartUploads = %+v", got)
	}
}
