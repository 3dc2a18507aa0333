package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ferryhq/ferry/store"
)

// testPutObjectRoundTrip: PutObject stores bytes and returns the
// object's attributes; an empty object works too.
func testPutObjectRoundTrip(t *testing.T, e env) {
	for _, size := range []int{0, 1, 100 << 10} {
		key := e.key(fmt.Sprintf("size-%d", size))
		data := testData(uint64(100+size), size)
		info := e.put(t, key, data, store.PutOptions{})
		if info.Key != key || info.ETag == "" {
			t.Errorf("PutObject returned Key %q ETag %q, want Key %q and an ETag", info.Key, info.ETag, key)
		}
		e.wantObject(t, key, data, info)
	}
}

// testPutObjectBadReader: a reader that fails (the error wraps the
// reader's), ends early (ErrSizeMismatch and io.ErrUnexpectedEOF) or yields
// more than size bytes (ErrSizeMismatch) writes nothing, with and without a
// CRC32C: a new key stays missing and an existing object stays as it was.
func testPutObjectBadReader(t *testing.T, e env) {
	const size = 64 << 10
	data := testData(110, size)
	readers := []struct {
		name string
		r    func() io.Reader
		// wantErrs are the errors the failure must wrap.
		wantErrs []error
	}{
		{"FailsMidway", func() io.Reader { return &errReader{bytes.NewReader(data[:size/2])} }, []error{errBroken}},
		{"Short", func() io.Reader { return bytes.NewReader(data[:size-1]) }, errShort},
		{"Long", func() io.Reader { return io.MultiReader(bytes.NewReader(data), strings.NewReader("extra")) }, []error{store.ErrSizeMismatch}},
	}
	for _, rd := range readers {
		for _, opts := range []store.PutOptions{{}, {CRC32C: store.CRC32C(data), HasCRC32C: true}} {
			name := rd.name
			if opts.HasCRC32C {
				name += "WithCRC32C"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				e := e.sub(name)
				key := e.key("new")
				_, err := e.s.PutObject(t.Context(), key, rd.r(), size, opts)
				for _, want := range rd.wantErrs {
					wantErr(t, "PutObject of a new key from a bad reader", err, want)
				}
				_, err = e.s.StatObject(t.Context(), key)
				wantErr(t, "StatObject after a failed PutObject", err, store.ErrNotFound)

				key = e.key("existing")
				old := []byte("old")
				oldInfo := e.put(t, key, old, store.PutOptions{})
				_, err = e.s.PutObject(t.Context(), key, rd.r(), size, opts)
				for _, want := range rd.wantErrs {
					wantErr(t, "PutObject over an existing key from a bad reader", err, want)
				}
				e.wantObject(t, key, old, oldInfo)
			})
		}
	}
}

// testPutObjectIfNoneMatch: a conditional put writes a new key, and fails
// on an existing one leaving it as it was.
func testPutObjectIfNoneMatch(t *testing.T, e env) {
	key := e.key("object")
	first := []byte("first")
	info := e.put(t, key, first, store.PutOptions{IfNoneMatch: true})
	e.wantObject(t, key, first, info)

	_, err := e.s.PutObject(t.Context(), key, strings.NewReader("second"), 6, store.PutOptions{IfNoneMatch: true})
	wantErr(t, "conditional PutObject on an existing key", err, store.ErrPreconditionFailed)
	e.wantObject(t, key, first, info)

	third := []byte("third")
	info = e.put(t, key, third, store.PutOptions{}) // unconditional: replaces
	e.wantObject(t, key, third, info)
}

// testPutObjectChecksum: a put given the CRC32C of its bytes stores them
// and records it, of any size from 0 to past MaxBufferedPutSize-like
// thresholds; a put given a CRC32C that differs fails with
// ErrChecksumMismatch and stores nothing, for a new key and over an
// existing object.
func testPutObjectChecksum(t *testing.T, e env) {
	for _, size := range []int{0, 1, 64 << 10, 17 << 20} {
		key := e.key(fmt.Sprintf("size-%d", size))
		data := testData(uint64(170+size), size)
		crc := store.CRC32C(data)
		info := e.put(t, key, data, store.PutOptions{CRC32C: crc, HasCRC32C: true})
		if !info.HasCRC32C || info.CRC32C != crc {
			t.Errorf("PutObject(%d bytes) returned CRC32C %08x (HasCRC32C %v), want %08x", size, info.CRC32C, info.HasCRC32C, crc)
		}
		e.wantObject(t, key, data, info)
		if st := e.stat(t, key); !st.HasCRC32C || st.CRC32C != crc {
			t.Errorf("StatObject after PutObject(%d bytes) CRC32C %08x (HasCRC32C %v), want %08x", size, st.CRC32C, st.HasCRC32C, crc)
		}
	}
	for _, size := range []int{1, 64 << 10, 17 << 20} {
		data := testData(uint64(180+size), size)
		bad := store.CRC32C(data) ^ 1
		key := e.key(fmt.Sprintf("bad-new-%d", size))
		_, err := e.s.PutObject(t.Context(), key, bytes.NewReader(data), int64(size), store.PutOptions{CRC32C: bad, HasCRC32C: true})
		wantErr(t, fmt.Sprintf("PutObject(%d bytes) with a wrong CRC32C", size), err, store.ErrChecksumMismatch)
		_, err = e.s.StatObject(t.Context(), key)
		wantErr(t, "StatObject after a PutObject with a wrong CRC32C", err, store.ErrNotFound)

		key = e.key(fmt.Sprintf("bad-existing-%d", size))
		old := []byte("old")
		oldInfo := e.put(t, key, old, store.PutOptions{})
		_, err = e.s.PutObject(t.Context(), key, bytes.NewReader(data), int64(size), store.PutOptions{CRC32C: bad, HasCRC32C: true})
		wantErr(t, fmt.Sprintf("PutObject(%d bytes) over an object with a wrong CRC32C", size), err, store.ErrChecksumMismatch)
		e.wantObject(t, key, old, oldInfo)
	}
}

// testPutObjectIfNoneMatchConcurrent: of several conditional puts of one
// new key at once, exactly one wins, and the object is its.
func testPutObjectIfNoneMatchConcurrent(t *testing.T, e env) {
	const writers = 4
	key := e.key("object")
	data := make([][]byte, writers)
	infos := make([]store.ObjectInfo, writers)
	errs := make([]error, writers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range writers {
		data[i] = testData(uint64(120+i), 8000+i)
		wg.Go(func() {
			<-start
			infos[i], errs[i] = e.s.PutObject(t.Context(), key, bytes.NewReader(data[i]), int64(len(data[i])), store.PutOptions{IfNoneMatch: true})
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("writers %d and %d both put with IfNoneMatch", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, store.ErrPreconditionFailed) && !errors.Is(err, store.ErrConflict):
			t.Errorf("writer %d: PutObject = %v, want ErrPreconditionFailed or ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no conditional put succeeded")
	}
	e.wantObject(t, key, data[winner], infos[winner])
}

// testReadObjectRanges: offset and length select [offset, offset+length),
// cut short at the end; offset == size gives no bytes, offset > size
// ErrInvalidRange, whatever the length, also where offset+length would
// overflow an int64. The ObjectInfo describes the whole object.
func testReadObjectRanges(t *testing.T, e env) {
	const size = 1000
	data := testData(130, size)
	key := e.key("object")
	info := e.put(t, key, data, store.PutOptions{})
	empty := e.key("empty")
	emptyInfo := e.put(t, empty, nil, store.PutOptions{})

	tests := []struct {
		key            string
		offset, length int64
		want           []byte // nil with wantErr set
		wantErr        error
	}{
		{key, 0, -1, data, nil},
		{key, 0, size, data, nil},
		{key, 0, 1, data[:1], nil},
		{key, 10, 20, data[10:30], nil},
		{key, 990, -1, data[990:], nil},
		{key, 990, 100, data[990:], nil}, // past the end: cut short
		{key, 0, size + 1, data, nil},
		{key, 999, 1, data[999:], nil},
		{key, 500, 0, []byte{}, nil},
		{key, size, -1, []byte{}, nil}, // offset == size
		{key, size, 5, []byte{}, nil},
		{key, size + 1, -1, nil, store.ErrInvalidRange},
		{key, size + 1000, 10, nil, store.ErrInvalidRange},
		{empty, 0, -1, []byte{}, nil},
		{empty, 0, 10, []byte{}, nil},
		{empty, 1, -1, nil, store.ErrInvalidRange},
		// Lengths and offsets near the int64 limit: offset+length
		// overflows, and must read to the end, not fail.
		{key, 0, math.MaxInt64, data, nil},
		{key, 1, math.MaxInt64, data[1:], nil},
		{key, 2, math.MaxInt64, data[2:], nil},
		{key, 2, math.MaxInt64 - 1, data[2:], nil},
		{key, 999, math.MaxInt64, data[999:], nil},
		{key, 999, math.MaxInt64 - 998, data[999:], nil},
		{key, size, math.MaxInt64, []byte{}, nil},
		{key, size + 1, math.MaxInt64, nil, store.ErrInvalidRange},
		{key, math.MaxInt64, 1, nil, store.ErrInvalidRange},
		{key, math.MaxInt64, math.MaxInt64, nil, store.ErrInvalidRange},
		{key, math.MaxInt64, -1, nil, store.ErrInvalidRange},
		{key, math.MaxInt64, 0, nil, store.ErrInvalidRange},
		{empty, 0, math.MaxInt64, []byte{}, nil},
		{empty, 1, math.MaxInt64, nil, store.ErrInvalidRange},
		{empty, math.MaxInt64, math.MaxInt64, nil, store.ErrInvalidRange},
	}
	for _, tt := range tests {
		what := fmt.Sprintf("ReadObject(%s, offset %d, length %d)", tt.key[len(e.prefix):], tt.offset, tt.length)
		rc, got, err := e.s.ReadObject(t.Context(), tt.key, tt.offset, tt.length, store.ReadOptions{})
		if tt.wantErr != nil {
			wantErr(t, what, err, tt.wantErr)
			if err == nil {
				rc.Close()
			}
			continue
		}
		if err != nil {
			t.Errorf("%s = %v", what, err)
			continue
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Errorf("%s: reading: %v", what, err)
			continue
		}
		wantBytes(t, what, b, tt.want)
		want := info
		if tt.key == empty {
			want = emptyInfo
		}
		if got.Size != want.Size || got.ETag != want.ETag {
			t.Errorf("%s returned Size %d ETag %q, want the whole object's: Size %d ETag %q", what, got.Size, got.ETag, want.Size, want.ETag)
		}
	}
}

// testReadObjectIfMatch: IfMatch with the current ETag reads; any other
// ETag, including the one an overwrite replaced, is ErrPreconditionFailed.
func testReadObjectIfMatch(t *testing.T, e env) {
	key := e.key("object")
	v1 := testData(140, 3000)
	info1 := e.put(t, key, v1, store.PutOptions{})
	got, _ := e.read(t, key, 0, -1, store.ReadOptions{IfMatch: info1.ETag})
	wantBytes(t, "ReadObject with IfMatch the current ETag", got, v1)
	got, _ = e.read(t, key, 100, 50, store.ReadOptions{IfMatch: info1.ETag})
	wantBytes(t, "ranged ReadObject with IfMatch the current ETag", got, v1[100:150])
	_, _, err := e.s.ReadObject(t.Context(), key, 0, -1, store.ReadOptions{IfMatch: "0123456789abcdef0123456789abcdef"})
	wantErr(t, "ReadObject with IfMatch another ETag", err, store.ErrPreconditionFailed)

	v2 := testData(141, 3000)
	info2 := e.put(t, key, v2, store.PutOptions{})
	_, _, err = e.s.ReadObject(t.Context(), key, 100, -1, store.ReadOptions{IfMatch: info1.ETag})
	wantErr(t, "ReadObject with IfMatch the overwritten version's ETag", err, store.ErrPreconditionFailed)
	got, _ = e.read(t, key, 0, -1, store.ReadOptions{IfMatch: info2.ETag})
	wantBytes(t, "ReadObject with IfMatch the new ETag", got, v2)
}

// testMissingObject: StatObject and ReadObject of a key with no object are
// ErrNotFound, also when the key is a prefix of an existing key.
func testMissingObject(t *testing.T, e env) {
	e.put(t, e.key("dir/file"), []byte("x"), store.PutOptions{})
	for _, name := range []string{"missing", "dir", "dir/", "dir/file/", "dir/fil"} {
		key := e.key(name)
		_, err := e.s.StatObject(t.Context(), key)
		wantErr(t, "StatObject("+name+")", err, store.ErrNotFound)
		_, _, err = e.s.ReadObject(t.Context(), key, 0, -1, store.ReadOptions{})
		wantErr(t, "ReadObject("+name+")", err, store.ErrNotFound)
		_, _, err = e.s.ReadObject(t.Context(), key, 5, 10, store.ReadOptions{IfMatch: "0123456789abcdef0123456789abcdef"})
		wantErr(t, "ReadObject("+name+", ranged, IfMatch)", err, store.ErrNotFound)
	}
}

// testDeleteObject: a deleted object is gone from StatObject, ReadObject
// and ListObjects; deleting a missing key succeeds; other keys stay, one
// that the key is a prefix of too. (Not "d" beside "d/file": servers that
// keep keys as paths, such as versitygw, cannot store both, and ferry's
// key rules refuse such pairs; see store.ValidateKey.)
func testDeleteObject(t *testing.T, e env) {
	key, other := e.key("dir"), e.key("dir-file")
	e.put(t, key, []byte("deleted"), store.PutOptions{})
	otherData := []byte("stays")
	otherInfo := e.put(t, other, otherData, store.PutOptions{})
	for i := range 2 { // the second time the key is missing
		if err := e.s.DeleteObject(t.Context(), key); err != nil {
			t.Fatalf("DeleteObject (%d) = %v", i+1, err)
		}
	}
	_, err := e.s.StatObject(t.Context(), key)
	wantErr(t, "StatObject after DeleteObject", err, store.ErrNotFound)
	_, _, err = e.s.ReadObject(t.Context(), key, 0, -1, store.ReadOptions{})
	wantErr(t, "ReadObject after DeleteObject", err, store.ErrNotFound)
	if err := e.s.DeleteObject(t.Context(), e.key("never-existed")); err != nil {
		t.Errorf("DeleteObject of a key that never existed = %v", err)
	}
	res, err := e.s.ListObjects(t.Context(), e.prefix, "", 1000)
	if err != nil {
		t.Fatalf("ListObjects = %v", err)
	}
	if got := listedKeys(res); !slices.Equal(got, []string{other}) {
		t.Errorf("ListObjects after DeleteObject = %q, want [%q]", got, other)
	}
	e.wantObject(t, other, otherData, otherInfo)
}

func listedKeys(res store.ListResult) []string {
	keys := make([]string, len(res.Objects))
	for i, o := range res.Objects {
		keys[i] = o.Key
	}
	return keys
}

// testListObjects: listing by prefix, in ascending byte order of the UTF-8
// keys (not UTF-16 or code point order for non-ASCII), in pages that
// startAfter and maxKeys select, with IsTruncated false exactly on the
// last page.
func testListObjects(t *testing.T, e env) {
	e = e.sub("list")
	// In ascending byte order. "ab/c" sorts between "ab.c" and "ab0" by
	// bytes, whatever a store does with "/"; U+FF61 (EF BD A1) sorts
	// before U+10000 (F0 90 80 80) by bytes but after it in UTF-16. No
	// key is another's prefix followed by "/" (like "a" and "a/b"): S3
	// allows that, but MinIO on a file system does not list such keys.
	names := []string{"B", "a", "a b", "a-c", "ab.c", "ab/c", "ab/d", "ab0", "b", "~", "é", "\uff61", "\U00010000"}
	keys := make([]string, len(names))
	infos := make(map[string]store.ObjectInfo)
	for i, n := range names {
		keys[i] = e.key(n)
		infos[keys[i]] = e.put(t, keys[i], testData(uint64(150+i), i+1), store.PutOptions{})
	}
	if !slices.IsSorted(keys) {
		t.Fatal("storetest: the keys are not in byte order")
	}
	// Keys outside the prefix: one sorts before it, one after it.
	dir := strings.TrimSuffix(e.prefix, "/")
	outside := dir[:len(dir)-1]
	e.put(t, outside, []byte("outside"), store.PutOptions{})
	e.put(t, dir+"x", []byte("outside"), store.PutOptions{})

	list := func(prefix, startAfter string, maxKeys int) store.ListResult {
		t.Helper()
		res, err := e.s.ListObjects(t.Context(), prefix, startAfter, maxKeys)
		if err != nil {
			t.Fatalf("ListObjects(%q, %q, %d) = %v", prefix, startAfter, maxKeys, err)
		}
		for _, o := range res.Objects {
			want, ok := infos[o.Key]
			if !ok {
				t.Errorf("ListObjects(%q, %q, %d) lists %q, which is outside the prefix", prefix, startAfter, maxKeys, o.Key)
				continue
			}
			if o.Size != want.Size || o.ETag != want.ETag {
				t.Errorf("ListObjects lists %q with Size %d ETag %q, want Size %d ETag %q", o.Key, o.Size, o.ETag, want.Size, want.ETag)
			}
			if o.LastModified.IsZero() {
				t.Errorf("ListObjects lists %q without LastModified", o.Key)
			}
		}
		return res
	}
	tests := []struct {
		name               string
		prefix, startAfter string
		maxKeys            int
		want               []string
		truncated          bool
	}{
		{"All", e.prefix, "", 1000, keys, false},
		{"ExactFit", e.prefix, "", len(keys), keys, false},
		{"OneShort", e.prefix, "", len(keys) - 1, keys[:len(keys)-1], true},
		{"FirstPage", e.prefix, "", 3, keys[:3], true},
		{"StartAfterKey", e.prefix, e.key("a b"), 3, keys[3:6], true},
		{"StartAfterIntoDirectory", e.prefix, e.key("ab.c"), 3, keys[5:8], true},
		{"StartAfterBetweenKeys", e.prefix, e.key("a0"), 1000, keys[4:], false},
		{"StartAfterNonASCII", e.prefix, e.key("é"), 1000, keys[11:], false},
		{"StartAfterLast", e.prefix, keys[len(keys)-1], 1000, nil, false},
		{"StartAfterOutsideKey", e.prefix, outside, 1000, keys, false},
		{"NarrowPrefix", e.key("a"), "", 1000, keys[1:8], false},
		{"DirectoryPrefix", e.key("ab/"), "", 1000, keys[5:7], false},
		{"NonASCIIPrefix", e.key("\uff61"), "", 1000, keys[11:12], false},
		{"NoMatch", e.key("zzz"), "", 1000, nil, false},
	}
	for _, tt := range tests {
		res := list(tt.prefix, tt.startAfter, tt.maxKeys)
		if got := listedKeys(res); !slices.Equal(got, tt.want) {
			t.Errorf("%s: ListObjects = %q, want %q", tt.name, got, tt.want)
		}
		if res.IsTruncated != tt.truncated {
			t.Errorf("%s: ListObjects.IsTruncated = %v, want %v", tt.name, res.IsTruncated, tt.truncated)
		}
	}

	// Walking pages of 3 by startAfter visits every key once.
	var got []string
	startAfter := ""
	for range len(keys) + 1 {
		res := list(e.prefix, startAfter, 3)
		got = append(got, listedKeys(res)...)
		if !res.IsTruncated {
			break
		}
		if len(res.Objects) == 0 {
			t.Fatal("ListObjects returned an empty page with IsTruncated")
		}
		startAfter = res.Objects[len(res.Objects)-1].Key
	}
	if !slices.Equal(got, keys) {
		t.Errorf("ListObjects in pages of 3 = %q, want %q", got, keys)
	}
}

// testMetadataAndContentType: the content type and user metadata given
// when an object is written come back from StatObject and ReadObject; an
// empty content type is stored as application/octet-stream.
func testMetadataAndContentType(t *testing.T, e env) {
	meta := map[string]string{"color": "blue", "owner-id": "42", "note": "two words"}
	tests := []struct {
		name        string
		write       func(key string) // writes the object
		contentType string
		metadata    map[string]string
	}{
		{"Multipart", func(key string) {
			e.multipart(t, key, store.CreateOptions{ContentType: "text/plain; charset=utf-8", Metadata: meta}, []byte("text"))
		}, "text/plain; charset=utf-8", meta},
		{"MultipartDefault", func(key string) {
			e.multipart(t, key, store.CreateOptions{}, []byte("bytes"))
		}, "application/octet-stream", nil},
		{"PutObject", func(key string) {
			e.put(t, key, []byte(`{"a":1}`), store.PutOptions{ContentType: "application/json"})
		}, "application/json", nil},
		{"PutObjectDefault", func(key string) {
			e.put(t, key, []byte("bytes"), store.PutOptions{})
		}, "application/octet-stream", nil},
		{"PutObjectMetadata", func(key string) {
			e.put(t, key, []byte("text"), store.PutOptions{ContentType: "text/plain", Metadata: meta})
		}, "text/plain", meta},
	}
	for _, tt := range tests {
		key := e.key(tt.name)
		tt.write(key)
		st := e.stat(t, key)
		_, rd := e.read(t, key, 0, -1, store.ReadOptions{})
		for what, info := range map[string]store.ObjectInfo{"StatObject": st, "ReadObject": rd} {
			if info.ContentType != tt.contentType {
				t.Errorf("%s: %s ContentType = %q, want %q", tt.name, what, info.ContentType, tt.contentType)
			}
			if !maps.Equal(info.Metadata, tt.metadata) {
				t.Errorf("%s: %s Metadata = %v, want %v", tt.name, what, info.Metadata, tt.metadata)
			}
		}
	}
}

// testOverwriteChangesETag: every write of other bytes under a key, by
// PutObject or by a multipart upload, gives the object a new ETag.
func testOverwriteChangesETag(t *testing.T, e env) {
	key := e.key("object")
	seen := map[string]int{}
	versions := [][]byte{testData(160, 500), testData(161, 500), testData(162, 700), []byte("v4")}
	for i, v := range versions {
		var info store.ObjectInfo
		if i == 2 {
			info = e.multipart(t, key, store.CreateOptions{}, v)
		} else {
			info = e.put(t, key, v, store.PutOptions{})
		}
		if j, ok := seen[info.ETag]; ok {
			t.Errorf("version %d has the ETag %q of version %d", i+1, info.ETag, j+1)
		}
		seen[info.ETag] = i
		e.wantObject(t, key, v, info)
	}
}

// testLongKey: a key of MaxKeyLength bytes, in segments of at most 200
// bytes (the longest file name many file systems allow is 255), works for
// every call.
func testLongKey(t *testing.T, e env) {
	var b strings.Builder
	b.WriteString(e.prefix)
	for b.Len() < store.MaxKeyLength {
		if b.Len()%201 == 200 {
			b.WriteByte('/')
		} else {
			b.WriteByte('k' + byte(b.Len()%3))
		}
	}
	key := b.String()
	if len(key) != store.MaxKeyLength {
		t.Fatalf("storetest: long key has %d bytes", len(key))
	}
	data := []byte("long key")
	info := e.put(t, key, data, store.PutOptions{})
	e.wantObject(t, key, data, info)
	res, err := e.s.ListObjects(t.Context(), e.prefix, "", 1000)
	if err != nil {
		t.Fatalf("ListObjects = %v", err)
	}
	if got := listedKeys(res); !slices.Equal(got, []string{key}) {
		t.Errorf("ListObjects lists %d keys, want the long key only", len(got))
	}

	data = testData(170, 2000)
	info = e.multipart(t, key, store.CreateOptions{}, data)
	e.wantObject(t, key, data, info)
	if err := e.s.DeleteObject(t.Context(), key); err != nil {
		t.Fatalf("DeleteObject = %v", err)
	}
	_, err = e.s.StatObject(t.Context(), key)
	wantErr(t, "StatObject after DeleteObject", err, store.ErrNotFound)
}
