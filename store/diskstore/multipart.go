package diskstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferryhq/ferry/store"
	"github.com/google/uuid"
)

const (
	// uploadInfoName is the file in an upload's directory that holds its
	// key, content type and metadata.
	uploadInfoName = "upload.json"
	// gonePrefix names upload directories moved into tmp/ to be deleted.
	gonePrefix = "gone-"
	// partPrefix and the part number in five digits name a part file.
	partPrefix = "part-"
)

// uploadInfo is what upload.json holds.
type uploadInfo struct {
	Key         string            `json:"key"`
	ContentType string            `json:"contentType"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	Created     time.Time         `json:"created"`
}

// uploadLock orders the calls on one multipart upload in this process:
// a part is committed under the read lock, completion and abort hold the
// write lock. refs counts the calls using it, so that it is dropped from
// [Store.uploads] when none does.
type uploadLock struct {
	sync.RWMutex
	refs int
}

// lockUpload locks the upload with ID id, exclusively or shared, and
// returns the function that unlocks it.
func (s *Store) lockUpload(id string, exclusive bool) (unlock func()) {
	s.mu.Lock()
	l := s.uploads[id]
	if l == nil {
		l = new(uploadLock)
		s.uploads[id] = l
	}
	l.refs++
	s.mu.Unlock()
	if exclusive {
		l.Lock()
	} else {
		l.RLock()
	}
	return func() {
		if exclusive {
			l.Unlock()
		} else {
			l.RUnlock()
		}
		s.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.uploads, id)
		}
		s.mu.Unlock()
	}
}

func (s *Store) uploadDir(id string) string { return filepath.Join(s.uploadsDir(), id) }

func (s *Store) partPath(id string, number int) string {
	return filepath.Join(s.uploadDir(id), fmt.Sprintf("%s%05d", partPrefix, number))
}

// parsePartName returns the part number a part file's name holds.
func parsePartName(name string) (int, bool) {
	digits, ok := strings.CutPrefix(name, partPrefix)
	if !ok || len(digits) != 5 {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	return n, err == nil && n >= 1 && n <= store.MaxParts
}

// readUpload returns the upload with ID id, which must be an upload of
// key, or an error wrapping [store.ErrUploadNotFound].
func (s *Store) readUpload(key, id string) (*uploadInfo, error) {
	u, err := s.readUploadInfo(id)
	if errors.Is(err, store.ErrUploadNotFound) || err == nil && u.Key != key {
		return nil, fmt.Errorf("diskstore: upload %q of %q: %w", id, key, store.ErrUploadNotFound)
	}
	return u, err
}

// readUploadInfo returns the upload.json of upload id, or an error wrapping
// [store.ErrUploadNotFound].
func (s *Store) readUploadInfo(id string) (*uploadInfo, error) {
	notFound := fmt.Errorf("diskstore: upload %q: %w", id, store.ErrUploadNotFound)
	// Only IDs this store could have made name a directory: this also
	// keeps an ID like "../x" from naming a path outside uploads/.
	if u, err := uuid.Parse(id); err != nil || u.String() != id {
		return nil, notFound
	}
	b, err := os.ReadFile(filepath.Join(s.uploadDir(id), uploadInfoName))
	if isNotExist(err) {
		return nil, notFound
	}
	if err != nil {
		return nil, fsError("", err)
	}
	u := new(uploadInfo)
	if err := json.Unmarshal(b, u); err != nil {
		return nil, fmt.Errorf("%w: upload %s: %v", errCorrupt, id, err)
	}
	return u, nil
}

// CreateMultipartUpload starts a multipart upload for key and returns its
// upload ID, a random UUID. Nothing is visible under key until completion.
// Keys must be 1 to [store.MaxKeyLength] bytes of UTF-8
// ([store.ErrInvalidKey] otherwise).
func (s *Store) CreateMultipartUpload(ctx context.Context, key string, opts store.CreateOptions) (string, error) {
	if err := checkKey(key); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	b, err := json.Marshal(uploadInfo{
		Key:         key,
		ContentType: cmp.Or(opts.ContentType, defaultContentType),
		Metadata:    maps.Clone(opts.Metadata),
		Created:     time.Now().UTC(),
	})
	if err != nil {
		return "", fsError("", err)
	}
	// The upload's directory is made whole in tmp/, then renamed into
	// uploads/: an upload exists with its upload.json, or not at all.
	tmp, err := os.MkdirTemp(s.tmpDir(), "upload-*")
	if err != nil {
		return "", fsError("", err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	if err := writeFileSync(filepath.Join(tmp, uploadInfoName), b); err != nil {
		return "", err
	}
	if err := syncDir(tmp); err != nil {
		return "", err
	}
	id := uuid.NewString()
	if err := os.Rename(tmp, s.uploadDir(id)); err != nil {
		return "", fsError("", err)
	}
	if err := syncDir(s.uploadsDir()); err != nil {
		return "", err
	}
	return id, nil
}

// writeFileSync writes a new file and fsyncs it.
func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fsError("", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fsError("", err)
	}
	return nil
}

// UploadPart stores part number (1 to [store.MaxParts]) of an upload from
// r, which must yield exactly size bytes (0 to [store.MaxPartSize]) whose
// CRC32C is crc32c; a number or size outside those ranges is
// [store.ErrInvalidPart]. The bytes go to a temp file, their CRC32C
// computed on the way, and the part is committed by a rename only when all
// size bytes were read and matched: if r fails (the error wraps r's),
// yields another length ([store.ErrSizeMismatch]), or the CRC32C differs
// ([store.ErrChecksumMismatch]), nothing is stored and an earlier
// part with the number stays as it was. A part uploaded again replaces the
// earlier one atomically; of concurrent writers of one part, the last to
// commit wins, whole. Returns [store.ErrUploadNotFound] for an unknown
// upload, or one completed or aborted before the part was committed.
func (s *Store) UploadPart(ctx context.Context, key, uploadID string, number int, r io.Reader, size int64, crc32c uint32) (store.Part, error) {
	if number < 1 || number > store.MaxParts {
		return store.Part{}, fmt.Errorf("diskstore: part number %d is not in 1 to %d: %w", number, store.MaxParts, store.ErrInvalidPart)
	}
	if size < 0 || size > store.MaxPartSize {
		return store.Part{}, fmt.Errorf("diskstore: part size %d is not in 0 to %d bytes: %w", size, int64(store.MaxPartSize), store.ErrInvalidPart)
	}
	if err := ctx.Err(); err != nil {
		return store.Part{}, err
	}
	if _, err := s.readUpload(key, uploadID); err != nil {
		return store.Part{}, err
	}
	tmp, err := s.createTemp("part-*")
	if err != nil {
		return store.Part{}, err
	}
	defer tmp.discard()
	crc, err := copyData(tmp, r, size)
	if err != nil {
		return store.Part{}, err
	}
	if crc != crc32c {
		return store.Part{}, fmt.Errorf("diskstore: part %d has CRC32C %08x, not %08x: %w", number, crc, crc32c, store.ErrChecksumMismatch)
	}
	a := &partAttrs{Number: number, Size: size, ETag: newETag(), CRC32C: crc, LastModified: time.Now().UTC()}
	if err := writeAttrs(tmp.File, a); err != nil {
		return store.Part{}, err
	}
	if err := ctx.Err(); err != nil {
		return store.Part{}, err
	}
	unlock := s.lockUpload(uploadID, false)
	defer unlock()
	// If the upload was completed or aborted while the bytes were copied,
	// its directory is gone and the rename fails.
	if err := tmp.commit(s.partPath(uploadID, number), false); err != nil {
		if isNotExist(err) {
			return store.Part{}, fmt.Errorf("diskstore: upload %q of %q: %w", uploadID, key, store.ErrUploadNotFound)
		}
		return store.Part{}, err
	}
	return a.part(), nil
}

// openPart opens part number of an upload and reads its attributes. The
// caller closes the file.
func (s *Store) openPart(uploadID string, number int) (*os.File, *partAttrs, error) {
	f, err := os.Open(s.partPath(uploadID, number))
	if err != nil {
		return nil, nil, err
	}
	a := new(partAttrs)
	if err := readAttrs(f, a); err != nil {
		f.Close()
		return nil, nil, err
	}
	if a.Number != number {
		f.Close()
		return nil, nil, fmt.Errorf("%w: %s holds part %d", errCorrupt, f.Name(), a.Number)
	}
	return f, a, nil
}

// ListParts returns up to maxParts (1 to 1000; other values mean 1000)
// committed parts with numbers greater than partNumberMarker, in
// ascending number. Returns [store.ErrUploadNotFound] for an unknown
// upload.
func (s *Store) ListParts(ctx context.Context, key, uploadID string, partNumberMarker, maxParts int) (store.ListPartsResult, error) {
	if maxParts <= 0 || maxParts > 1000 {
		maxParts = 1000
	}
	if err := ctx.Err(); err != nil {
		return store.ListPartsResult{}, err
	}
	if _, err := s.readUpload(key, uploadID); err != nil {
		return store.ListPartsResult{}, err
	}
	notFound := fmt.Errorf("diskstore: upload %q of %q: %w", uploadID, key, store.ErrUploadNotFound)
	entries, err := os.ReadDir(s.uploadDir(uploadID))
	if isNotExist(err) {
		return store.ListPartsResult{}, notFound
	}
	if err != nil {
		return store.ListPartsResult{}, fsError("", err)
	}
	var numbers []int
	for _, e := range entries {
		if n, ok := parsePartName(e.Name()); ok && n > partNumberMarker {
			numbers = append(numbers, n)
		}
	}
	slices.Sort(numbers)
	var res store.ListPartsResult
	if len(numbers) > maxParts {
		numbers, res.IsTruncated = numbers[:maxParts], true
	}
	for _, n := range numbers {
		f, a, err := s.openPart(uploadID, n)
		if isNotExist(err) {
			return store.ListPartsResult{}, notFound // completed or aborted meanwhile
		}
		if err != nil {
			return store.ListPartsResult{}, err
		}
		f.Close()
		res.Parts = append(res.Parts, a.part())
		res.NextPartNumberMarker = n
	}
	return res, nil
}

// CompleteMultipartUpload makes the object from parts, which must be in
// ascending number and each match a committed part's number, ETag and
// size, and of which all but the last must be at least
// [store.MinPartSize] bytes ([store.ErrInvalidPart] otherwise; the upload
// stays open). opts.CRC32C must be the CRC32C of the parts' bytes in order,
// which the store checks against the parts' CRC32Cs
// ([store.ErrChecksumMismatch] otherwise, as S3 checks a FULL_OBJECT
// checksum). The parts are concatenated into a temp file with
// copy_file_range, then the object replaces any object with the key by one
// rename, or with opts.IfNoneMatch is linked in only if the key is free
// ([store.ErrPreconditionFailed] otherwise; the upload stays open). Then
// the upload is removed. Returns [store.ErrUploadNotFound] for an unknown
// upload. The object records the upload it came from: when the object
// under key is already this upload's (a crash struck after its commit,
// before the upload was removed), the upload is removed and that object
// returned, provided opts.CRC32C is its CRC32C.
func (s *Store) CompleteMultipartUpload(ctx context.Context, key, uploadID string, parts []store.Part, opts store.CompleteOptions) (store.ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return store.ObjectInfo{}, err
	}
	unlock := s.lockUpload(uploadID, true)
	defer unlock()
	u, err := s.readUpload(key, uploadID)
	if err != nil {
		return store.ObjectInfo{}, err
	}
	if a, err := s.completedBy(key, uploadID); err != nil {
		return store.ObjectInfo{}, err
	} else if a != nil {
		if a.CRC32C != opts.CRC32C {
			return store.ObjectInfo{}, fmt.Errorf("diskstore: upload %q made %q with CRC32C %08x, not %08x: %w", uploadID, key, a.CRC32C, opts.CRC32C, store.ErrChecksumMismatch)
		}
		if err := s.removeUpload(uploadID); err != nil {
			return store.ObjectInfo{}, err
		}
		return a.info(), nil
	}
	if len(parts) == 0 {
		return store.ObjectInfo{}, fmt.Errorf("diskstore: completion names no parts: %w", store.ErrInvalidPart)
	}
	// Check every part before copying a byte. No part can change meanwhile:
	// parts are committed under the read lock.
	var size int64
	var crc uint32
	for i, p := range parts {
		if i > 0 && p.Number <= parts[i-1].Number {
			return store.ObjectInfo{}, fmt.Errorf("diskstore: part %d follows part %d: parts must be in ascending order: %w", p.Number, parts[i-1].Number, store.ErrInvalidPart)
		}
		a, err := s.checkPart(uploadID, p)
		if err != nil {
			return store.ObjectInfo{}, err
		}
		if i < len(parts)-1 && a.Size < store.MinPartSize {
			return store.ObjectInfo{}, fmt.Errorf("diskstore: part %d has %d bytes, under the minimum of %d for all but the last part: %w",
				p.Number, a.Size, store.MinPartSize, store.ErrInvalidPart)
		}
		size += a.Size
		crc = store.CombineCRC32C(crc, a.CRC32C, a.Size)
	}
	if crc != opts.CRC32C {
		return store.ObjectInfo{}, fmt.Errorf("diskstore: the parts' CRC32C is %08x, not %08x: %w", crc, opts.CRC32C, store.ErrChecksumMismatch)
	}

	tmp, err := s.createTemp("object-*")
	if err != nil {
		return store.ObjectInfo{}, err
	}
	defer tmp.discard()
	for _, p := range parts {
		if err := ctx.Err(); err != nil {
			return store.ObjectInfo{}, err
		}
		if err := s.appendPart(tmp.File, uploadID, p); err != nil {
			return store.ObjectInfo{}, err
		}
	}
	info, err := s.commitObject(ctx, tmp, &objectAttrs{
		Key:          key,
		Size:         size,
		ETag:         newETag(),
		ContentType:  u.ContentType,
		Metadata:     u.Metadata,
		CRC32C:       crc,
		HasCRC32C:    true,
		LastModified: time.Now().UTC(),
		UploadID:     uploadID,
	}, opts.IfNoneMatch)
	if err != nil {
		return store.ObjectInfo{}, err
	}
	// The object is committed, so the completion succeeded. Should the
	// upload's removal fail, or a crash prevent it, a repeated completion
	// or the next [New] removes it.
	_ = s.removeUpload(uploadID)
	return info, nil
}

// completedBy returns the attributes of the object under key when upload
// uploadID made it, and nil when there is no object or another write made
// it.
func (s *Store) completedBy(key, uploadID string) (*objectAttrs, error) {
	f, a, err := s.openObject(key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	f.Close()
	if a.UploadID != uploadID {
		return nil, nil
	}
	return a, nil
}

// removeCompletedUploads removes every upload whose object is committed,
// which only a crash between the two steps of a completion leaves.
func (s *Store) removeCompletedUploads() error {
	entries, err := os.ReadDir(s.uploadsDir())
	if err != nil {
		return fsError("", err)
	}
	for _, e := range entries {
		id := e.Name()
		u, err := s.readUploadInfo(id)
		if err != nil {
			continue // not an upload, or removed meanwhile: nothing to repair
		}
		a, err := s.completedBy(u.Key, id)
		if err != nil {
			return err
		}
		if a != nil {
			if err := s.removeUpload(id); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkPart returns the attributes of the committed part p names, or an
// error wrapping [store.ErrInvalidPart] if there is none, or its ETag or
// size differ.
func (s *Store) checkPart(uploadID string, p store.Part) (*partAttrs, error) {
	if p.Number < 1 || p.Number > store.MaxParts {
		return nil, fmt.Errorf("diskstore: part number %d is not in 1 to %d: %w", p.Number, store.MaxParts, store.ErrInvalidPart)
	}
	f, a, err := s.openPart(uploadID, p.Number)
	if isNotExist(err) {
		return nil, fmt.Errorf("diskstore: part %d is not committed: %w", p.Number, store.ErrInvalidPart)
	}
	if err != nil {
		return nil, err
	}
	f.Close()
	if a.ETag != p.ETag || a.Size != p.Size {
		return nil, fmt.Errorf("diskstore: part %d has ETag %q and %d bytes, not %q and %d: %w",
			p.Number, a.ETag, a.Size, p.ETag, p.Size, store.ErrInvalidPart)
	}
	return a, nil
}

// appendPart copies the data of part p to the end of dst. Between two
// files, io.Copy uses copy_file_range: the kernel copies, or the file
// system shares the blocks.
func (s *Store) appendPart(dst *os.File, uploadID string, p store.Part) error {
	f, a, err := s.openPart(uploadID, p.Number)
	if err != nil {
		return err
	}
	defer f.Close()
	if a.ETag != p.ETag {
		return fmt.Errorf("diskstore: part %d changed during completion: %w", p.Number, store.ErrInvalidPart)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fsError("", err)
	}
	n, err := io.Copy(dst, io.LimitReader(f, a.Size))
	if err != nil {
		return fsError(fmt.Sprintf("copying part %d", p.Number), err)
	}
	if n != a.Size {
		return fmt.Errorf("%w: part %d yielded %d of its %d bytes", errCorrupt, p.Number, n, a.Size)
	}
	return nil
}

// AbortMultipartUpload discards an upload and its parts. Returns
// [store.ErrUploadNotFound] for an unknown upload.
func (s *Store) AbortMultipartUpload(ctx context.Context, key, uploadID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	unlock := s.lockUpload(uploadID, true)
	defer unlock()
	if _, err := s.readUpload(key, uploadID); err != nil {
		return err
	}
	if err := s.removeUpload(uploadID); err != nil {
		if isNotExist(err) {
			return fmt.Errorf("diskstore: upload %q of %q: %w", uploadID, key, store.ErrUploadNotFound)
		}
		return err
	}
	return nil
}

// ListMultipartUploads returns up to maxUploads (1 to 1000; other values
// mean 1000) open uploads of key, oldest first (by creation time, then
// upload ID), after the upload uploadIDMarker. It reads the upload.json of
// every open upload, so it costs O(open uploads) file reads.
func (s *Store) ListMultipartUploads(ctx context.Context, key, uploadIDMarker string, maxUploads int) (store.ListUploadsResult, error) {
	if maxUploads <= 0 || maxUploads > 1000 {
		maxUploads = 1000
	}
	if err := ctx.Err(); err != nil {
		return store.ListUploadsResult{}, err
	}
	entries, err := os.ReadDir(s.uploadsDir())
	if err != nil {
		return store.ListUploadsResult{}, fsError("", err)
	}
	var all []store.MultipartUpload
	for _, e := range entries {
		u, err := s.readUploadInfo(e.Name())
		if errors.Is(err, store.ErrUploadNotFound) {
			continue // removed meanwhile, or not an upload
		}
		if err != nil {
			return store.ListUploadsResult{}, err
		}
		if u.Key == key {
			all = append(all, store.MultipartUpload{Key: key, UploadID: e.Name(), Initiated: u.Created})
		}
	}
	slices.SortFunc(all, func(a, b store.MultipartUpload) int {
		return cmp.Or(a.Initiated.Compare(b.Initiated), strings.Compare(a.UploadID, b.UploadID))
	})
	if uploadIDMarker != "" {
		i := slices.IndexFunc(all, func(u store.MultipartUpload) bool { return u.UploadID == uploadIDMarker })
		all = all[i+1:] // a marker no longer listed (removed meanwhile) starts over
	}
	var res store.ListUploadsResult
	if len(all) > maxUploads {
		all, res.IsTruncated = all[:maxUploads], true
		res.NextUploadIDMarker = all[len(all)-1].UploadID
	}
	res.Uploads = all
	return res, nil
}

// removeUpload removes an upload: the rename of its directory into tmp/
// is the instant it stops existing; deleting the files follows, and what
// a crash leaves of them [New] deletes.
func (s *Store) removeUpload(uploadID string) error {
	gone := filepath.Join(s.tmpDir(), gonePrefix+uploadID)
	if err := os.Rename(s.uploadDir(uploadID), gone); err != nil {
		return fsError("removing upload", err)
	}
	if err := syncDir(s.uploadsDir()); err != nil {
		return err
	}
	if err := os.RemoveAll(gone); err != nil {
		return fsError("removing upload", err)
	}
	return nil
}
