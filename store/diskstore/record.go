package diskstore

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ferryhq/ferry/store"
)

// A record is one file holding some data and its attributes: the data
// bytes, then the attributes as JSON, then a footer of the JSON's length
// (4 bytes, big-endian) and [recordMagic]. The attributes go last so that
// a record is written in one sequential pass even when they depend on the
// data (a CRC32C computed while copying); they are read with two small
// preads from the end. Objects and parts are records, so data and
// attributes are committed together by one rename and never disagree.
const (
	recordMagic      = "fry1"
	footerSize       = 8
	maxAttributeSize = 1 << 20 // bytes; far more than any key and metadata need
)

// errCorrupt is wrapped by errors about files that are not valid records.
// The store never leaves one (see the package doc); finding one means the
// directory was changed by something else.
var errCorrupt = errors.New("diskstore: corrupt record")

// objectAttrs are the attributes of an object record.
type objectAttrs struct {
	Key          string            `json:"key"`
	Size         int64             `json:"size"`
	ETag         string            `json:"etag"`
	ContentType  string            `json:"contentType"`
	Metadata     map[string]string `json:"metadata,omitempty"`
	CRC32C       uint32            `json:"crc32c"`
	HasCRC32C    bool              `json:"hasCRC32C"`
	LastModified time.Time         `json:"lastModified"`
	// UploadID names the multipart upload whose completion made the
	// object; empty for PutObject. It lets a repeated completion, and
	// [New] after a crash, know the upload is done.
	UploadID string `json:"uploadID,omitempty"`
}

func (a *objectAttrs) size() int64 { return a.Size }

func (a *objectAttrs) info() store.ObjectInfo {
	return store.ObjectInfo{
		Key:          a.Key,
		Size:         a.Size,
		ETag:         a.ETag,
		ContentType:  a.ContentType,
		Metadata:     a.Metadata,
		LastModified: a.LastModified,
		CRC32C:       a.CRC32C,
		HasCRC32C:    a.HasCRC32C,
	}
}

// partAttrs are the attributes of a part record.
type partAttrs struct {
	Number       int       `json:"number"`
	Size         int64     `json:"size"`
	ETag         string    `json:"etag"`
	CRC32C       uint32    `json:"crc32c"`
	LastModified time.Time `json:"lastModified"`
}

func (a *partAttrs) size() int64 { return a.Size }

func (a *partAttrs) part() store.Part {
	return store.Part{Number: a.Number, Size: a.Size, ETag: a.ETag, CRC32C: a.CRC32C, LastModified: a.LastModified}
}

// attrs is what records carry: their data size is part of them.
type attrs interface{ size() int64 }

// writeAttrs appends a's JSON and the footer at f's current offset, which
// must be the end of the data.
func writeAttrs(f *os.File, a attrs) error {
	b, err := json.Marshal(a)
	if err != nil {
		return fsError("encoding attributes", err)
	}
	if len(b) > maxAttributeSize {
		return fmt.Errorf("diskstore: attributes of %d bytes exceed the limit of %d", len(b), maxAttributeSize)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(b)))
	b = append(b, recordMagic...)
	if _, err := f.Write(b); err != nil {
		return fsError("writing attributes", err)
	}
	return nil
}

// readAttrs reads the attributes of the record open as f into a and checks
// that the data before them has the size they state.
func readAttrs(f *os.File, a attrs) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	n := fi.Size()
	var foot [footerSize]byte
	if n < footerSize {
		return fmt.Errorf("%w: %s is %d bytes", errCorrupt, f.Name(), n)
	}
	if _, err := f.ReadAt(foot[:], n-footerSize); err != nil {
		return err
	}
	alen := int64(binary.BigEndian.Uint32(foot[:4]))
	if string(foot[4:]) != recordMagic || alen > maxAttributeSize || alen > n-footerSize {
		return fmt.Errorf("%w: %s has no valid footer", errCorrupt, f.Name())
	}
	b := make([]byte, alen)
	if _, err := f.ReadAt(b, n-footerSize-alen); err != nil {
		return err
	}
	if err := json.Unmarshal(b, a); err != nil {
		return fmt.Errorf("%w: %s: %v", errCorrupt, f.Name(), err)
	}
	if data := n - footerSize - alen; a.size() != data {
		return fmt.Errorf("%w: %s holds %d bytes of data, its attributes say %d", errCorrupt, f.Name(), data, a.size())
	}
	return nil
}

// tempFile is a file being written in the store's tmp directory, to be
// committed under its final name by [tempFile.commit] or removed by
// [tempFile.discard].
type tempFile struct {
	*os.File
	done bool
}

func (s *Store) createTemp(pattern string) (*tempFile, error) {
	f, err := os.CreateTemp(s.tmpDir(), pattern)
	if err != nil {
		return nil, fsError("creating a temp file", err)
	}
	return &tempFile{File: f}, nil
}

// discard closes and removes the file unless it was committed. It is safe
// to defer right after creation.
func (t *tempFile) discard() {
	if !t.done {
		t.done = true
		t.Close()
		os.Remove(t.Name())
	}
}

// commit makes the written file durable (fsync), then moves it to path in
// one atomic step: rename, which replaces any file at path, or when
// noClobber a hard link, which fails if path exists (then the error wraps
// [fs.ErrExist] and path is unchanged). Then it makes the new directory
// entry durable (fsync of the directory). Either way the temp name is gone
// afterwards.
func (t *tempFile) commit(path string, noClobber bool) error {
	defer t.discard()
	if err := t.Sync(); err != nil {
		return fsError("", err)
	}
	if err := t.Close(); err != nil {
		return fsError("", err)
	}
	t.done = true
	if noClobber {
		err := os.Link(t.Name(), path)
		os.Remove(t.Name())
		if err != nil {
			return fsError("", err)
		}
	} else if err := os.Rename(t.Name(), path); err != nil {
		os.Remove(t.Name())
		return fsError("", err)
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes the entries of directory dir durable: after a crash, a
// file renamed into it is there, and a removed one is not.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fsError("", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fsError("syncing directory", err)
	}
	return nil
}

// isNotExist reports whether err says a file or directory does not exist.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// fsError wraps an error of the file system with the package's name and
// what was being done (may be empty). Running out of space or quota
// (ENOSPC, EDQUOT) also wraps [store.ErrInsufficientStorage], so that the
// caller can tell a full disk, which frees up, from a broken one.
func fsError(what string, err error) error {
	prefix := "diskstore: "
	if what != "" {
		prefix += what + ": "
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%s%w: %w", prefix, store.ErrInsufficientStorage, err)
	}
	return fmt.Errorf("%s%w", prefix, err)
}
