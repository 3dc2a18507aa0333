package diskstore_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/store"
	"github.com/ferryhq/ferry/store/diskstore"
	"github.com/ferryhq/ferry/store/storetest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store { return newStore(t, t.TempDir()) })
}

func newStore(t *testing.T, dir string) *diskstore.Store {
	t.Helper()
	s, err := diskstore.New(dir)
	if err != nil {
		t.Fatalf("New(%q) = %v", dir, err)
	}
	return s
}

func put(t *testing.T, s *diskstore.Store, key string, data []byte) store.ObjectInfo {
	t.Helper()
	info, err := s.PutObject(t.Context(), key, bytes.NewReader(data), int64(len(data)), store.PutOptions{})
	if err != nil {
		t.Fatalf("PutObject(%q) = %v", key, err)
	}
	return info
}

func uploadPart(t *testing.T, s *diskstore.Store, key, id string, number int, data []byte) store.Part {
	t.Helper()
	p, err := s.UploadPart(t.Context(), key, id, number, bytes.NewReader(data), int64(len(data)), store.CRC32C(data))
	if err != nil {
		t.Fatalf("UploadPart(%d) = %v", number, err)
	}
	return p
}

func create(t *testing.T, s *diskstore.Store, key string) string {
	t.Helper()
	id, err := s.CreateMultipartUpload(t.Context(), key, store.CreateOptions{})
	if err != nil {
		t.Fatalf("CreateMultipartUpload(%q) = %v", key, err)
	}
	return id
}

func readAll(t *testing.T, r io.ReadCloser) []byte {
	t.Helper()
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("reading: %v", err)
	}
	return b
}

// names lists the entries of dir.
func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range entries {
		n = append(n, e.Name())
	}
	return n
}

// TestLayout checks the layout the package doc describes: an object at
// objects/<hh>/<sha256 hex of key>, its data first; uploads under
// uploads/<upload ID>/ with a file per part.
func TestLayout(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newStore(t, dir)
	data := []byte("the object's bytes")
	put(t, s, "a/b", data)
	h := sha256.Sum256([]byte("a/b"))
	name := hex.EncodeToString(h[:])
	b, err := os.ReadFile(filepath.Join(dir, "objects", name[:2], name))
	if err != nil {
		t.Fatalf("object file: %v", err)
	}
	if !bytes.HasPrefix(b, data) || !bytes.Contains(b, []byte(`"key":"a/b"`)) {
		t.Errorf("object file = %q, want the data then attributes with the key", b)
	}

	id := create(t, s, "a/b")
	uploadPart(t, s, "a/b", id, 3, []byte("part"))
	if got, want := names(t, filepath.Join(dir, "uploads", id)), []string{"part-00003", "upload.json"}; !slices.Equal(got, want) {
		t.Errorf("upload directory holds %q, want %q", got, want)
	}
	if got := names(t, filepath.Join(dir, "tmp")); len(got) != 0 {
		t.Errorf("tmp/ holds %q after successful writes, want nothing", got)
	}
}

// TestKeysThatArePathPrefixes: "a", "a/b" and "a/b/c" are three objects,
// as on S3, though no file system path can be both a file and a directory.
// (The conformance suite leaves this out: MinIO on a file system does not
// list such keys.)
func TestKeysThatArePathPrefixes(t *testing.T) {
	t.Parallel()
	s := newStore(t, t.TempDir())
	keys := []string{"a", "a/", "a/b", "a/b/c", "a//b", "/a"}
	for _, k := range keys {
		put(t, s, k, []byte("object "+k))
	}
	for _, k := range keys {
		r, _, err := s.ReadObject(t.Context(), k, 0, -1, store.ReadOptions{})
		if err != nil {
			t.Fatalf("ReadObject(%q) = %v", k, err)
		}
		if got := readAll(t, r); string(got) != "object "+k {
			t.Errorf("ReadObject(%q) = %q", k, got)
		}
	}
	res, err := s.ListObjects(t.Context(), "", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range res.Objects {
		got = append(got, o.Key)
	}
	want := slices.Sorted(slices.Values(keys))
	if !slices.Equal(got, want) {
		t.Errorf("ListObjects = %q, want %q", got, want)
	}
}

// TestReopen: objects and open uploads survive the store being opened
// again, as after a restart.
func TestReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newStore(t, dir)
	obj := put(t, s, "object", []byte("kept"))
	id := create(t, s, "upload")
	part := uploadPart(t, s, "upload", id, 1, []byte("part one"))

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = newStore(t, dir)
	if info, err := s.StatObject(t.Context(), "object"); err != nil || info.ETag != obj.ETag {
		t.Errorf("StatObject after reopening = %+v, %v; want ETag %q", info, err, obj.ETag)
	}
	res, err := s.ListParts(t.Context(), "upload", id, 0, 1000)
	if err != nil || len(res.Parts) != 1 || res.Parts[0].ETag != part.ETag {
		t.Fatalf("ListParts after reopening = %+v, %v; want part 1 with ETag %q", res, err, part.ETag)
	}
	if _, err := s.CompleteMultipartUpload(t.Context(), "upload", id, res.Parts, store.CompleteOptions{CRC32C: part.CRC32C}); err != nil {
		t.Fatalf("CompleteMultipartUpload after reopening = %v", err)
	}
	r, _, err := s.ReadObject(t.Context(), "upload", 0, -1, store.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, r); string(got) != "part one" {
		t.Errorf("completed object = %q, want %q", got, "part one")
	}
}

// TestRemovesCrashLeftovers: New removes everything in tmp/, however
// recent: holding the directory's lock, it knows no live process writes
// there (issue 12, finding 12: a crashed server's temp files stayed for an
// hour).
func TestRemovesCrashLeftovers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	newStore(t, dir).Close()
	tmp := filepath.Join(dir, "tmp")
	old := time.Now().Add(-2 * time.Hour)
	mk := func(name string, isDir bool, mtime time.Time) {
		p := filepath.Join(tmp, name)
		if isDir {
			if err := os.MkdirAll(filepath.Join(p, "sub"), 0o700); err != nil {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	mk("gone-1f0e", true, time.Now())
	mk("part-old", false, old)
	mk("object-old", false, old)
	mk("upload-old", true, old)
	mk("part-fresh", false, time.Now())
	mk("upload-fresh", true, time.Now())
	newStore(t, dir)
	if got := names(t, tmp); len(got) != 0 {
		t.Errorf("tmp/ after New holds %q, want nothing", got)
	}
}

// TestLock: a directory serves one Store at a time, in this process or
// another; the second New fails at once and says why, and Close lets the
// next one in.
func TestLock(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newStore(t, dir)
	put(t, s, "kept", []byte("x"))
	_, err := diskstore.New(dir)
	if err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("second New on a directory in use = %v, want an error saying it is in use", err)
	}
	if _, err := s.StatObject(t.Context(), "kept"); err != nil {
		t.Fatalf("the first Store after a refused second one: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = newStore(t, dir)
	if _, err := s.StatObject(t.Context(), "kept"); err != nil {
		t.Fatalf("StatObject after Close and New = %v", err)
	}
}

// TestCrashBetweenCommitAndRemoval puts the directory in the state a crash
// between the two steps of a completion leaves (the object committed, the
// upload still there, with its parts) and checks the repairs: a repeated
// completion, with or without IfNoneMatch, returns the object it made
// instead of failing or making a new one, and New removes the upload.
func TestCrashBetweenCommitAndRemoval(t *testing.T) {
	t.Parallel()
	for _, ifNoneMatch := range []bool{false, true} {
		dir := t.TempDir()
		s := newStore(t, dir)
		data := []byte("completed before the crash")
		crashed := func(key string) (string, store.Part, store.ObjectInfo) {
			id := create(t, s, key)
			p := uploadPart(t, s, key, id, 1, data)
			saved := filepath.Join(t.TempDir(), id)
			if err := os.CopyFS(saved, os.DirFS(filepath.Join(dir, "uploads", id))); err != nil {
				t.Fatal(err)
			}
			info, err := s.CompleteMultipartUpload(t.Context(), key, id, []store.Part{p}, store.CompleteOptions{CRC32C: p.CRC32C, IfNoneMatch: ifNoneMatch})
			if err != nil {
				t.Fatal(err)
			}
			// As if the removal had not happened.
			if err := os.CopyFS(filepath.Join(dir, "uploads", id), os.DirFS(saved)); err != nil {
				t.Fatal(err)
			}
			return id, p, info
		}
		id, p, info := crashed("object")
		again, err := s.CompleteMultipartUpload(t.Context(), "object", id, []store.Part{p}, store.CompleteOptions{CRC32C: p.CRC32C, IfNoneMatch: ifNoneMatch})
		if err != nil || again.ETag != info.ETag || again.Size != info.Size || again.CRC32C != info.CRC32C {
			t.Errorf("if_none_match %v: repeated completion = %+v, %v; want the object it made, %+v", ifNoneMatch, again, err, info)
		}
		if got := names(t, filepath.Join(dir, "uploads")); len(got) != 0 {
			t.Errorf("uploads/ after the repeated completion holds %q", got)
		}
		if _, err := s.CompleteMultipartUpload(t.Context(), "object", id, []store.Part{p}, store.CompleteOptions{CRC32C: p.CRC32C}); !errors.Is(err, store.ErrUploadNotFound) {
			t.Errorf("completion once the upload is gone = %v, want ErrUploadNotFound", err)
		}

		id, _, info = crashed("second")
		if _, err := s.CompleteMultipartUpload(t.Context(), "second", id, []store.Part{p}, store.CompleteOptions{CRC32C: p.CRC32C + 1}); !errors.Is(err, store.ErrChecksumMismatch) {
			t.Errorf("repeated completion with another CRC32C = %v, want ErrChecksumMismatch", err)
		}
		s.Close()
		s = newStore(t, dir)
		if got := names(t, filepath.Join(dir, "uploads")); len(got) != 0 {
			t.Errorf("uploads/ after New holds %q, want the completed upload removed", got)
		}
		if st, err := s.StatObject(t.Context(), "second"); err != nil || st.ETag != info.ETag {
			t.Errorf("object after New = %+v, %v; want %+v", st, err, info)
		}
		// An upload whose object another write replaced is left alone.
		open := create(t, s, "object")
		uploadPart(t, s, "object", open, 1, data)
		s.Close()
		s = newStore(t, dir)
		if got := names(t, filepath.Join(dir, "uploads")); !slices.Equal(got, []string{open}) {
			t.Errorf("uploads/ after New holds %q, want the open upload %s", got, open)
		}
		s.Close()
	}
}

// TestNoLeftoversAfterFailures: failed and successful writes leave no
// temp file, and completed or aborted uploads leave no directory.
func TestNoLeftoversAfterFailures(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newStore(t, dir)
	ctx := t.Context()
	data := []byte("some bytes")
	put(t, s, "exists", data)

	if _, err := s.PutObject(ctx, "exists", bytes.NewReader(data), int64(len(data)), store.PutOptions{IfNoneMatch: true}); !errors.Is(err, store.ErrPreconditionFailed) {
		t.Errorf("conditional PutObject = %v, want ErrPreconditionFailed", err)
	}
	if _, err := s.PutObject(ctx, "short", bytes.NewReader(data), int64(len(data))+1, store.PutOptions{}); err == nil {
		t.Error("PutObject from a short reader succeeded")
	}
	id := create(t, s, "exists")
	if _, err := s.UploadPart(ctx, "exists", id, 1, bytes.NewReader(data), int64(len(data)), 1); !errors.Is(err, store.ErrChecksumMismatch) {
		t.Errorf("UploadPart with a wrong CRC32C = %v, want ErrChecksumMismatch", err)
	}
	p := uploadPart(t, s, "exists", id, 1, data)
	if _, err := s.CompleteMultipartUpload(ctx, "exists", id, []store.Part{p}, store.CompleteOptions{CRC32C: p.CRC32C, IfNoneMatch: true}); !errors.Is(err, store.ErrPreconditionFailed) {
		t.Errorf("conditional CompleteMultipartUpload = %v, want ErrPreconditionFailed", err)
	}
	if err := s.AbortMultipartUpload(ctx, "exists", id); err != nil {
		t.Fatal(err)
	}
	id = create(t, s, "done")
	p = uploadPart(t, s, "done", id, 1, data)
	if _, err := s.CompleteMultipartUpload(ctx, "done", id, []store.Part{p}, store.CompleteOptions{CRC32C: p.CRC32C}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"tmp", "uploads"} {
		if got := names(t, filepath.Join(dir, d)); len(got) != 0 {
			t.Errorf("%s/ holds %q, want nothing", d, got)
		}
	}
}

// TestReadDuringOverwrite: a read that began before the object was
// replaced or deleted reads the version it began with, whole.
func TestReadDuringOverwrite(t *testing.T) {
	t.Parallel()
	s := newStore(t, t.TempDir())
	v1 := bytes.Repeat([]byte("1"), 1<<20)
	v2 := bytes.Repeat([]byte("2"), 1<<20)
	for _, after := range []string{"overwrite", "delete"} {
		key := "object-" + after
		info1 := put(t, s, key, v1)
		r, info, err := s.ReadObject(t.Context(), key, 0, -1, store.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		head := make([]byte, 1000)
		if _, err := io.ReadFull(r, head); err != nil {
			t.Fatal(err)
		}
		if after == "overwrite" {
			put(t, s, key, v2)
		} else if err := s.DeleteObject(t.Context(), key); err != nil {
			t.Fatal(err)
		}
		got := append(head, readAll(t, r)...)
		if !bytes.Equal(got, v1) || info.ETag != info1.ETag {
			t.Errorf("read across an %s: %d bytes, equal to version 1: %v", after, len(got), bytes.Equal(got, v1))
		}
	}
}

// TestCompleteAbortRace: of a completion and an abort of one upload at
// once, exactly one succeeds, and the object exists exactly when the
// completion won.
func TestCompleteAbortRace(t *testing.T) {
	t.Parallel()
	s := newStore(t, t.TempDir())
	data := []byte("raced")
	for i := range 20 {
		key := "object-" + string(rune('a'+i))
		id := create(t, s, key)
		p := uploadPart(t, s, key, id, 1, data)
		var completeErr, abortErr error
		var wg sync.WaitGroup
		wg.Go(func() {
			_, completeErr = s.CompleteMultipartUpload(t.Context(), key, id, []store.Part{p}, store.CompleteOptions{CRC32C: p.CRC32C})
		})
		wg.Go(func() { abortErr = s.AbortMultipartUpload(t.Context(), key, id) })
		wg.Wait()
		if (completeErr == nil) == (abortErr == nil) {
			t.Fatalf("complete = %v, abort = %v; want exactly one to succeed", completeErr, abortErr)
		}
		loser := completeErr
		if loser == nil {
			loser = abortErr
		}
		if !errors.Is(loser, store.ErrUploadNotFound) {
			t.Errorf("the losing call returned %v, want ErrUploadNotFound", loser)
		}
		_, err := s.StatObject(t.Context(), key)
		if (err == nil) != (completeErr == nil) {
			t.Errorf("complete = %v but StatObject = %v", completeErr, err)
		}
	}
}

// TestPartCommitAfterCompletion: a part whose bytes were still arriving
// when the upload completed is not committed, and says so.
func TestPartCommitAfterCompletion(t *testing.T) {
	t.Parallel()
	s := newStore(t, t.TempDir())
	data := []byte("first part")
	id := create(t, s, "object")
	p := uploadPart(t, s, "object", id, 1, data)

	late := bytes.Repeat([]byte("late"), 1000)
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		_, err := s.UploadPart(t.Context(), "object", id, 2, pr, int64(len(late)), store.CRC32C(late))
		errc <- err
	}()
	if _, err := pw.Write(late[:100]); err != nil { // UploadPart is reading
		t.Fatal(err)
	}
	if _, err := s.CompleteMultipartUpload(t.Context(), "object", id, []store.Part{p}, store.CompleteOptions{CRC32C: p.CRC32C}); err != nil {
		t.Fatal(err)
	}
	pw.Write(late[100:])
	pw.Close()
	if err := <-errc; !errors.Is(err, store.ErrUploadNotFound) {
		t.Errorf("UploadPart finishing after completion = %v, want ErrUploadNotFound", err)
	}
}

// TestCompleteChecksumMismatch: the full-object CRC32C given at completion
// must match the parts', as S3 checks a FULL_OBJECT checksum; the upload
// stays open.
func TestCompleteChecksumMismatch(t *testing.T) {
	t.Parallel()
	s := newStore(t, t.TempDir())
	id := create(t, s, "object")
	p := uploadPart(t, s, "object", id, 1, []byte("data"))
	_, err := s.CompleteMultipartUpload(t.Context(), "object", id, []store.Part{p}, store.CompleteOptions{CRC32C: p.CRC32C ^ 1})
	if !errors.Is(err, store.ErrChecksumMismatch) {
		t.Errorf("CompleteMultipartUpload with a wrong CRC32C = %v, want ErrChecksumMismatch", err)
	}
	if _, err := s.CompleteMultipartUpload(t.Context(), "object", id, []store.Part{p}, store.CompleteOptions{CRC32C: p.CRC32C}); err != nil {
		t.Errorf("CompleteMultipartUpload with the right CRC32C afterwards = %v", err)
	}
}

// TestInvalidKeysAndUploadIDs: keys S3 would refuse are refused, and
// upload IDs that are not this store's UUIDs name no upload, whatever
// path they spell.
func TestInvalidKeysAndUploadIDs(t *testing.T) {
	t.Parallel()
	s := newStore(t, t.TempDir())
	for _, key := range []string{"", strings.Repeat("k", store.MaxKeyLength+1), "bad\xffutf8"} {
		if _, err := s.PutObject(t.Context(), key, strings.NewReader("x"), 1, store.PutOptions{}); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("PutObject(%q) = %v, want ErrInvalidKey", key, err)
		}
		if _, err := s.CreateMultipartUpload(t.Context(), key, store.CreateOptions{}); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("CreateMultipartUpload(%q) = %v, want ErrInvalidKey", key, err)
		}
	}
	id := create(t, s, "object")
	for _, bad := range []string{"", "..", "../uploads/" + id, strings.ToUpper(id), "{" + id + "}", "urn:uuid:" + id} {
		if _, err := s.ListParts(t.Context(), "object", bad, 0, 10); !errors.Is(err, store.ErrUploadNotFound) {
			t.Errorf("ListParts(upload ID %q) = %v, want ErrUploadNotFound", bad, err)
		}
	}
}

// TestCorruptObjectIsAnError: a damaged object file is reported, not read
// as an object.
func TestCorruptObjectIsAnError(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newStore(t, dir)
	put(t, s, "object", []byte("some data"))
	h := sha256.Sum256([]byte("object"))
	name := hex.EncodeToString(h[:])
	path := filepath.Join(dir, "objects", name[:2], name)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, fi.Size()-1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StatObject(t.Context(), "object"); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Errorf("StatObject of a truncated object file = %v, want an error other than ErrNotFound", err)
	}
	if _, err := s.ListObjects(t.Context(), "", "", 10); err == nil {
		t.Error("ListObjects over a truncated object file succeeded")
	}
}

// patternReader yields n bytes of a fixed pattern without allocating.
type patternReader struct{ n, off int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	if int64(len(p)) > r.n-r.off {
		p = p[:r.n-r.off]
	}
	for i := range p {
		p[i] = byte((r.off + int64(i)) * 7)
	}
	r.off += int64(len(p))
	return len(p), nil
}

// TestMemoryConstantInObjectSize: writing parts, completing and reading an
// object stream; they allocate far less than the object's size. Not
// parallel, so that other tests' allocations do not count.
func TestMemoryConstantInObjectSize(t *testing.T) {
	const partSize, parts = 16 << 20, 2
	s := newStore(t, t.TempDir())
	ctx := t.Context()
	partCRC := crc32.New(store.Castagnoli)
	io.Copy(partCRC, &patternReader{n: partSize})

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	id, err := s.CreateMultipartUpload(ctx, "big", store.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var done []store.Part
	var full uint32
	for n := 1; n <= parts; n++ {
		p, err := s.UploadPart(ctx, "big", id, n, &patternReader{n: partSize}, partSize, partCRC.Sum32())
		if err != nil {
			t.Fatal(err)
		}
		done = append(done, p)
		full = store.CombineCRC32C(full, p.CRC32C, p.Size)
	}
	if _, err := s.CompleteMultipartUpload(ctx, "big", id, done, store.CompleteOptions{CRC32C: full}); err != nil {
		t.Fatal(err)
	}
	r, _, err := s.ReadObject(ctx, "big", 0, -1, store.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	crc := crc32.New(store.Castagnoli)
	n, err := io.Copy(crc, r)
	r.Close()
	runtime.ReadMemStats(&after)
	if err != nil || n != partSize*parts || crc.Sum32() != full {
		t.Fatalf("read %d bytes (err %v) with CRC32C %08x, want %d bytes with %08x", n, err, crc.Sum32(), partSize*parts, full)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Errorf("writing and reading a %d MiB object allocated %d KiB, want under 4 MiB", partSize*parts>>20, alloc>>10)
	}
}
