// Package diskstore is a [store.Store] in a local directory: the embedded
// default that lets ferry run on one machine with no S3 server. It follows
// S3's rules (part sizes, part numbers, ETags, conditional writes) so that
// code tested against it behaves the same on S3, and it passes the
// conformance suite in [github.com/ferryhq/ferry/store/storetest].
//
// # Layout
//
// Under the directory given to [New]:
//
//	objects/<hh>/<hash>               one file per object
//	uploads/<upload ID>/upload.json   the key, content type and metadata of an upload
//	uploads/<upload ID>/part-NNNNN    one file per committed part (NNNNN: the part number)
//	tmp/                              files and directories being written or removed
//	lock                              the file a Store holds an exclusive lock on
//
// <hash> is the hex SHA-256 of the object's key and <hh> its first two
// characters, so any UTF-8 key of up to 1024 bytes maps to one short file
// name: "a" and "a/b" are both objects, and keys need no escaping. Upload
// IDs are random UUIDs.
//
// An object file and a part file are both records: the data, then the
// attributes as JSON (an object's key, size, ETag, content type, metadata,
// CRC32C and modification time; a part's number, size, ETag and CRC32C),
// then an 8-byte footer with the JSON's length. ETags are 128 random bits
// in hex, new for every write.
//
// # Crash safety
//
// Nothing is ever modified in place. Every change is prepared in tmp/, on
// the same file system, and made visible by one atomic step:
//
//   - an object or part is written to a temp file (its CRC32C computed
//     while copying and, for a part, checked against the one given before
//     anything is committed), fsynced, then renamed over its final name.
//     A conditional write (IfNoneMatch) uses a hard link instead, which
//     fails when the name exists: an atomic no-clobber. The directory is
//     fsynced before the call returns, so a committed part or object
//     survives a power loss.
//   - a multipart upload is created as a directory in tmp/ holding its
//     upload.json, then renamed into uploads/.
//   - completion concatenates the parts into a temp file (copy_file_range,
//     so no bytes pass through memory), appends the attributes and commits
//     it as above; only then is the upload removed.
//   - an upload is removed (abort, or after completion) by renaming its
//     directory into tmp/, which is the instant it stops existing, and
//     then deleting it.
//
// So a crash at any moment leaves every object and part either as it was
// or wholly replaced, never half written, and data and attributes can never
// disagree because one rename commits both. A crash can leave garbage in
// tmp/ only, and [New] removes all of it at once: the lock (below) proves
// that no live process is still writing there. An object made by
// completion records the upload it came from, so a crash between
// committing the object and removing the upload is repaired too: [New]
// removes such an upload, and a completion repeated meanwhile returns the
// object instead of making it again.
//
// # One process per directory
//
// [New] takes an exclusive flock(2) on the directory's lock file, held
// until [Store.Close] or the process's end (the kernel drops it even after
// SIGKILL), and fails at once if another Store holds it: a second ferry
// server on the same directory is refused with a clear error instead of
// racing the first. (Where flock does not exist, as on Windows, there is
// no lock, and New removes only temp files not modified for an hour.)
//
// Readers hold an open file: [Store.ReadObject] returns a reader over the
// file it opened, so an object replaced or deleted during a read is read
// whole in the version the read began with (POSIX keeps a renamed-over
// file's data until its last descriptor closes).
//
// # Limits
//
// The store is for one process on one machine, and its lock sees to it.
// Calls on one multipart upload are ordered by a lock in memory
// (completion and abort exclude each other and the commit of a part).
// ListObjects reads the attributes of
// every object to find the keys in a page, so it costs O(objects in the
// store) file reads per call and memory proportional to maxKeys. The
// directory must be on a file system with hard links and atomic rename
// (any POSIX file system).
package diskstore

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ferryhq/ferry/store"
)

// defaultContentType is stored when a write gives no content type, as S3
// does.
const defaultContentType = "application/octet-stream"

// staleTempAge is how long a temp file must have gone unmodified before
// [New], where it cannot lock the directory, takes it for a crash's
// leftover and removes it. Writers modify their temp file as data
// arrives, so only a writer stalled this long could lose one.
const staleTempAge = time.Hour

// Store is a [store.Store] in a local directory. It is safe for concurrent
// use by several goroutines.
type Store struct {
	dir  string
	lock *os.File // holds the directory's flock; nil without one

	mu      sync.Mutex
	uploads map[string]*uploadLock // by upload ID, while a call holds it
}

var _ store.Store = (*Store)(nil)

// New opens the store in directory dir, creating the directory and its
// layout if needed, and takes the directory's lock (see the package
// documentation): it fails at once if another Store, in this process or
// another, has the directory open. Then it repairs what a crash left:
// it removes everything in tmp/, and the uploads whose completion had
// committed their object. It returns an error if dir cannot be created,
// locked or written. [Store.Close] releases the lock.
func New(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fsError("", err)
	}
	s := &Store{dir: abs, uploads: make(map[string]*uploadLock)}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fsError("", err)
	}
	if s.lock, err = lockDir(abs); err != nil {
		return nil, err
	}
	for _, d := range []string{s.objectsDir(), s.uploadsDir(), s.tmpDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			s.Close()
			return nil, fsError("", err)
		}
	}
	before := time.Now().Add(-staleTempAge)
	if locked {
		before = time.Now().Add(time.Hour) // everything: no live writer is left
	}
	if err := s.removeStaleTemps(before); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.removeCompletedUploads(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close releases the directory's lock, so that another Store may open it.
// The Store must not be used afterwards. Closing a closed Store does
// nothing.
func (s *Store) Close() error {
	if s.lock == nil {
		return nil
	}
	err := s.lock.Close()
	s.lock = nil
	return err
}

func (s *Store) objectsDir() string { return filepath.Join(s.dir, "objects") }
func (s *Store) uploadsDir() string { return filepath.Join(s.dir, "uploads") }
func (s *Store) tmpDir() string     { return filepath.Join(s.dir, "tmp") }

// objectPath returns the file name of the object with key.
func (s *Store) objectPath(key string) string {
	h := sha256.Sum256([]byte(key))
	name := hex.EncodeToString(h[:])
	return filepath.Join(s.objectsDir(), name[:2], name)
}

// removeStaleTemps removes directories left being deleted (named gone-*),
// and other entries of tmp/ not modified since before: all of them when
// the directory is locked.
func (s *Store) removeStaleTemps(before time.Time) error {
	entries, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return fsError("", err)
	}
	for _, e := range entries {
		path := filepath.Join(s.tmpDir(), e.Name())
		if !strings.HasPrefix(e.Name(), gonePrefix) {
			fi, err := e.Info()
			if err != nil || fi.ModTime().After(before) {
				continue // removed meanwhile, or maybe still being written
			}
		}
		if err := os.RemoveAll(path); err != nil {
			return fmt.Errorf("diskstore: removing a crash's leftover: %w", err)
		}
	}
	return nil
}

// checkKey refuses keys that S3 would refuse and that JSON could not
// carry unchanged: empty, longer than [store.MaxKeyLength], or not UTF-8.
func checkKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("diskstore: %w: key is empty", store.ErrInvalidKey)
	case len(key) > store.MaxKeyLength:
		return fmt.Errorf("diskstore: %w: key is %d bytes, the limit is %d", store.ErrInvalidKey, len(key), store.MaxKeyLength)
	case !utf8.ValidString(key):
		return fmt.Errorf("diskstore: %w: key is not valid UTF-8", store.ErrInvalidKey)
	}
	return nil
}

// newETag returns 128 random bits in hex: a new ETag for every write, in
// the shape of S3's MD5 ETags.
func newETag() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails (crypto/rand documents it)
	return hex.EncodeToString(b)
}

// copyData copies exactly size bytes from r to w and returns their CRC32C.
// It fails if r fails, ends before size bytes, or has more than size bytes
// (it reads one byte further to know). Memory use is one copy buffer.
func copyData(w io.Writer, r io.Reader, size int64) (uint32, error) {
	crc := crc32.New(store.Castagnoli)
	n, err := io.CopyN(io.MultiWriter(w, crc), r, size)
	if err == io.EOF {
		return 0, fmt.Errorf("diskstore: reader ended after %d of %d bytes: %w: %w", n, size, store.ErrSizeMismatch, io.ErrUnexpectedEOF)
	}
	if err != nil {
		return 0, fsError("copying data", err)
	}
	var one [1]byte
	switch k, err := io.ReadFull(r, one[:]); {
	case k > 0:
		return 0, fmt.Errorf("diskstore: reader has more than the %d bytes declared: %w", size, store.ErrSizeMismatch)
	case err != io.EOF:
		return 0, fsError("copying data", err)
	}
	return crc.Sum32(), nil
}

// PutObject writes an object from r, which must yield exactly size bytes
// (else nothing is written: the error wraps r's, or
// [store.ErrSizeMismatch] for another length). It records the CRC32C of the bytes, and fails
// with [store.ErrChecksumMismatch], writing nothing, when opts gives one that
// differs. It records opts.Metadata. With
// IfNoneMatch it fails with [store.ErrPreconditionFailed] if the key
// exists, atomically. Keys must be 1 to [store.MaxKeyLength] bytes of
// UTF-8 ([store.ErrInvalidKey] otherwise).
func (s *Store) PutObject(ctx context.Context, key string, r io.Reader, size int64, opts store.PutOptions) (store.ObjectInfo, error) {
	if err := checkKey(key); err != nil {
		return store.ObjectInfo{}, err
	}
	if size < 0 {
		return store.ObjectInfo{}, fmt.Errorf("diskstore: negative object size %d", size)
	}
	if err := ctx.Err(); err != nil {
		return store.ObjectInfo{}, err
	}
	tmp, err := s.createTemp("object-*")
	if err != nil {
		return store.ObjectInfo{}, err
	}
	defer tmp.discard()
	crc, err := copyData(tmp, r, size)
	if err != nil {
		return store.ObjectInfo{}, err
	}
	if opts.HasCRC32C && crc != opts.CRC32C {
		return store.ObjectInfo{}, fmt.Errorf("diskstore: PutObject %q: %w: the data has CRC32C %08x, declared %08x", key, store.ErrChecksumMismatch, crc, opts.CRC32C)
	}
	a := &objectAttrs{
		Key:          key,
		Size:         size,
		ETag:         newETag(),
		ContentType:  cmp.Or(opts.ContentType, defaultContentType),
		Metadata:     maps.Clone(opts.Metadata),
		CRC32C:       crc,
		HasCRC32C:    true,
		LastModified: time.Now().UTC(),
	}
	return s.commitObject(ctx, tmp, a, opts.IfNoneMatch)
}

// commitObject appends a to tmp, which holds the object's data, and
// commits it under the key.
func (s *Store) commitObject(ctx context.Context, tmp *tempFile, a *objectAttrs, ifNoneMatch bool) (store.ObjectInfo, error) {
	if err := writeAttrs(tmp.File, a); err != nil {
		return store.ObjectInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return store.ObjectInfo{}, err
	}
	path := s.objectPath(a.Key)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return store.ObjectInfo{}, fsError("", err)
	}
	if err := tmp.commit(path, ifNoneMatch); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return store.ObjectInfo{}, fmt.Errorf("diskstore: object %q exists: %w", a.Key, store.ErrPreconditionFailed)
		}
		return store.ObjectInfo{}, err
	}
	return a.info(), nil
}

// openObject opens the object with key and reads its attributes. The
// caller closes the file.
func (s *Store) openObject(key string) (*os.File, *objectAttrs, error) {
	if err := checkKey(key); err != nil {
		return nil, nil, err
	}
	f, err := os.Open(s.objectPath(key))
	if isNotExist(err) {
		return nil, nil, fmt.Errorf("diskstore: %q: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return nil, nil, fsError("", err)
	}
	a := new(objectAttrs)
	if err := readAttrs(f, a); err != nil {
		f.Close()
		return nil, nil, err
	}
	if a.Key != key { // a SHA-256 collision: never in practice
		f.Close()
		return nil, nil, fmt.Errorf("diskstore: %q: %w", key, store.ErrNotFound)
	}
	return f, a, nil
}

// StatObject returns an object's attributes, or [store.ErrNotFound].
func (s *Store) StatObject(ctx context.Context, key string) (store.ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return store.ObjectInfo{}, err
	}
	f, a, err := s.openObject(key)
	if err != nil {
		return store.ObjectInfo{}, err
	}
	f.Close()
	return a.info(), nil
}

// ReadObject opens the byte range [offset, offset+length) of an object;
// length < 0 means to the end, and a range past the end is cut short. The
// reader reads the version of the object that was current when ReadObject
// was called, however the key is written meanwhile. The caller closes it.
// Returns [store.ErrNotFound], [store.ErrInvalidRange] when offset is
// negative or greater than the size, or [store.ErrPreconditionFailed] when
// opts.IfMatch is set and differs from the ETag.
func (s *Store) ReadObject(ctx context.Context, key string, offset, length int64, opts store.ReadOptions) (io.ReadCloser, store.ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, store.ObjectInfo{}, err
	}
	f, a, err := s.openObject(key)
	if err != nil {
		return nil, store.ObjectInfo{}, err
	}
	switch {
	case opts.IfMatch != "" && opts.IfMatch != a.ETag:
		f.Close()
		return nil, store.ObjectInfo{}, fmt.Errorf("diskstore: %q has ETag %q, not %q: %w", key, a.ETag, opts.IfMatch, store.ErrPreconditionFailed)
	case offset < 0 || offset > a.Size:
		f.Close()
		return nil, store.ObjectInfo{}, fmt.Errorf("diskstore: offset %d of %q, which has %d bytes: %w", offset, key, a.Size, store.ErrInvalidRange)
	}
	if length < 0 || length > a.Size-offset {
		length = a.Size - offset
	}
	return &objectReader{SectionReader: io.NewSectionReader(f, offset, length), f: f}, a.info(), nil
}

// objectReader reads a section of an open object file.
type objectReader struct {
	*io.SectionReader
	f *os.File
}

// Close closes the object file.
func (r *objectReader) Close() error { return r.f.Close() }

// DeleteObject removes an object. Removing a missing key succeeds.
func (s *Store) DeleteObject(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	path := s.objectPath(key)
	if err := os.Remove(path); err != nil {
		if isNotExist(err) {
			return nil
		}
		return fsError("", err)
	}
	return syncDir(filepath.Dir(path))
}

// ListObjects returns up to maxKeys objects (1 to 1000; other values mean
// 1000) whose keys start with prefix and sort after startAfter, in
// ascending byte order. It reads the attributes of every object in the
// store, so it costs O(objects) file reads; memory is O(maxKeys).
func (s *Store) ListObjects(ctx context.Context, prefix, startAfter string, maxKeys int) (store.ListResult, error) {
	if maxKeys <= 0 || maxKeys > 1000 {
		maxKeys = 1000
	}
	// best holds the smallest maxKeys+1 matching objects seen, in order;
	// the one past maxKeys says whether the page is truncated.
	var best []store.ObjectInfo
	fanout, err := os.ReadDir(s.objectsDir())
	if err != nil {
		return store.ListResult{}, fsError("", err)
	}
	for _, d := range fanout {
		if err := ctx.Err(); err != nil {
			return store.ListResult{}, err
		}
		if !d.IsDir() || len(d.Name()) != 2 {
			continue
		}
		dir := filepath.Join(s.objectsDir(), d.Name())
		files, err := os.ReadDir(dir)
		if err != nil {
			return store.ListResult{}, fsError("", err)
		}
		for _, fe := range files {
			if len(fe.Name()) != sha256.Size*2 {
				continue
			}
			info, err := readObjectInfo(filepath.Join(dir, fe.Name()))
			if isNotExist(err) {
				continue // deleted meanwhile
			}
			if err != nil {
				return store.ListResult{}, err
			}
			if !strings.HasPrefix(info.Key, prefix) || info.Key <= startAfter {
				continue
			}
			if len(best) > maxKeys && info.Key >= best[maxKeys].Key {
				continue
			}
			i, _ := slices.BinarySearchFunc(best, info.Key, func(o store.ObjectInfo, k string) int { return strings.Compare(o.Key, k) })
			best = slices.Insert(best, i, info)
			if len(best) > maxKeys+1 {
				best = best[:maxKeys+1]
			}
		}
	}
	res := store.ListResult{Objects: best, IsTruncated: len(best) > maxKeys}
	if res.IsTruncated {
		res.Objects = best[:maxKeys]
	}
	return res, nil
}

// readObjectInfo reads the attributes of the object file at path, for a
// listing (without metadata).
func readObjectInfo(path string) (store.ObjectInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return store.ObjectInfo{}, err
	}
	defer f.Close()
	a := new(objectAttrs)
	if err := readAttrs(f, a); err != nil {
		return store.ObjectInfo{}, err
	}
	info := a.info()
	info.Metadata = nil
	return info, nil
}
