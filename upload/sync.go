package upload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sync/errgroup"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/store"
)

// SyncOptions configure [Sync]. The zero value uploads changed files four
// at a time and deletes nothing.
type SyncOptions struct {
	// Concurrency is the number of files uploaded at once. 0 means 4.
	Concurrency int
	// Delete removes remote objects under the prefix that have no local
	// file.
	Delete bool
	// DryRun reports what would be uploaded and deleted without doing it.
	DryRun bool
	// Log, when set, is called once per file or object acted on, with a
	// line such as "upload docs/a.txt" or "skip bad key: ...". Calls are
	// serialized.
	Log func(line string)
	// Progress, when set, is called as each file starts to move (not in a
	// dry run), with its key and size in bytes; the FileProgress it returns
	// (nil for none) follows that file's transfer. Calls come from
	// Concurrency goroutines at once.
	Progress func(key string, size int64) FileProgress
}

// FileProgress follows the transfer of one file of a sync.
type FileProgress interface {
	// Update is called like [UploaderOptions.Progress]: with the bytes done
	// so far and the file's size in bytes. Calls are serialized.
	Update(done, total int64)
	// End is called once, when the file is transferred (err nil) or has
	// failed.
	End(err error)
}

// StartFile calls opts.Progress for the file key of size bytes, and returns
// the progress callback for its transfer (nil for none) and the function
// to call with the transfer's outcome. Package download uses it too.
func (opts *SyncOptions) StartFile(key string, size int64) (update func(done, total int64), end func(error)) {
	if opts.Progress == nil {
		return nil, func(error) {}
	}
	fp := opts.Progress(key, size)
	if fp == nil {
		return nil, func(error) {}
	}
	return fp.Update, fp.End
}

// SyncResult counts what [Sync] (upload) or download.Sync did, in terms
// that fit either direction.
type SyncResult struct {
	// Files is the number of regular files found under the directory
	// (upload) or objects found under the prefix (download).
	Files int64 `json:"files"`
	// Transferred is the number of files uploaded or objects downloaded
	// (or, in a dry run, that would be).
	Transferred int64 `json:"transferred"`
	// Skipped is the number of files whose counterpart already had the
	// same size and CRC32C, plus those whose key or path is invalid.
	Skipped int64 `json:"skipped"`
	// Deleted is the number of objects or files deleted (or that would
	// be).
	Deleted int64 `json:"deleted"`
	// Failed is the number of files or objects that could not be
	// transferred or deleted.
	Failed int64 `json:"failed"`
	// Bytes is the size in bytes of what was transferred.
	Bytes int64 `json:"bytes"`
	// Seconds is the wall-clock duration of the sync in seconds.
	Seconds float64 `json:"seconds"`
}

// MarshalJSON encodes r with its fields' names and, beside them, the
// deprecated "uploaded" (= transferred) and "bytes_sent" (= bytes) that
// `ferry sync --json` printed before version 13 of its output, so that
// scripts reading them keep working; they are also set for a download.
func (r SyncResult) MarshalJSON() ([]byte, error) {
	type fields SyncResult // without this method
	return json.Marshal(struct {
		fields
		Uploaded  int64 `json:"uploaded"`
		BytesSent int64 `json:"bytes_sent"`
	}{fields(r), r.Transferred, r.Bytes})
}

// Sync makes the objects under prefix match the regular files under dir:
// each file becomes the object prefix + its slash-separated path relative
// to dir. A file is skipped when an object with its key has the same size
// and CRC32C (from ListObjects, or StatObject when the listing carries no
// CRC32C, as S3 listings do not). Files whose key fails [store.ValidateKey]
// are skipped and logged. Other files are uploaded with u, opts.Concurrency
// at a time; with opts.Delete, objects under prefix with no local file are
// deleted through objects.
//
// A failure of one file does not stop the others: Sync returns the counts
// and an error joining every file's failure, or the error of walking dir or
// listing the objects, which stops the sync.
func Sync(ctx context.Context, u *Uploader, objects ferryv1connect.ObjectServiceClient, dir, prefix string, opts SyncOptions) (*SyncResult, error) {
	start := time.Now()
	res := &SyncResult{}
	defer func() { res.Seconds = time.Since(start).Seconds() }()
	if opts.Concurrency <= 0 {
		opts.Concurrency = 4
	}
	tally := NewSyncTally(res, opts.Log)
	logf, fail := tally.Logf, tally.Fail
	remote, err := ListAll(ctx, objects, prefix)
	if err != nil {
		return res, err
	}
	type localFile struct {
		path, key string
		size      int64
	}
	var files []localFile
	local := make(map[string]bool)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		key := prefix + filepath.ToSlash(rel)
		res.Files++
		if err := store.ValidateKey(key); err != nil {
			res.Skipped++
			logf("skip %s: %v", path, err)
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		local[key] = true
		files = append(files, localFile{path: path, key: key, size: info.Size()})
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("sync %s: %w", dir, err)
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Concurrency)
	for _, f := range files {
		g.Go(func() error {
			same, err := SameObject(gctx, objects, remote[f.key], f.path, f.size)
			if err != nil {
				fail(err)
				return nil
			}
			if same {
				atomic.AddInt64(&res.Skipped, 1)
				return nil
			}
			logf("upload %s", f.key)
			if !opts.DryRun {
				update, end := opts.StartFile(f.key, f.size)
				err := uploadFile(gctx, u.WithProgress(update), f.path, f.key)
				end(err)
				if err != nil {
					fail(err)
					return nil
				}
			}
			atomic.AddInt64(&res.Transferred, 1)
			atomic.AddInt64(&res.Bytes, f.size)
			return nil
		})
	}
	if opts.Delete {
		for key := range remote {
			if local[key] {
				continue
			}
			g.Go(func() error {
				logf("delete %s", key)
				if !opts.DryRun {
					if _, err := objects.DeleteObject(gctx, connect.NewRequest(&ferryv1.DeleteObjectRequest{Key: key})); err != nil {
						fail(fmt.Errorf("delete %q: %w", key, err))
						return nil
					}
				}
				atomic.AddInt64(&res.Deleted, 1)
				return nil
			})
		}
	}
	_ = g.Wait()
	return res, tally.Err()
}

// ListAll returns every object whose key starts with prefix, by key,
// reading all pages of ListObjects. It returns the first call's error.
func ListAll(ctx context.Context, objects ferryv1connect.ObjectServiceClient, prefix string) (map[string]*ferryv1.Object, error) {
	out := make(map[string]*ferryv1.Object)
	token := ""
	for {
		resp, err := objects.ListObjects(ctx, connect.NewRequest(&ferryv1.ListObjectsRequest{Prefix: prefix, PageToken: token}))
		if err != nil {
			return nil, fmt.Errorf("list %q: %w", prefix, err)
		}
		for _, obj := range resp.Msg.GetObjects() {
			if strings.HasPrefix(obj.GetKey(), prefix) {
				out[obj.GetKey()] = obj
			}
		}
		token = resp.Msg.GetNextPageToken()
		if token == "" {
			return out, nil
		}
	}
}

// SameObject reports whether obj (nil for none) has size bytes and the
// CRC32C of the file at path. An object listed without a CRC32C, as S3
// listings are, is looked up with StatObject; an object with no CRC32C at
// all is never the same. It returns the error of StatObject (other than
// NOT_FOUND) or of reading the file.
func SameObject(ctx context.Context, objects ferryv1connect.ObjectServiceClient, obj *ferryv1.Object, path string, size int64) (bool, error) {
	if obj == nil || obj.GetSize() != size {
		return false, nil
	}
	if obj.Crc32C == nil {
		resp, err := objects.StatObject(ctx, connect.NewRequest(&ferryv1.StatObjectRequest{Key: obj.GetKey()}))
		if err != nil {
			if connect.CodeOf(err) == connect.CodeNotFound {
				return false, nil
			}
			return false, fmt.Errorf("stat %q: %w", obj.GetKey(), err)
		}
		obj = resp.Msg.GetObject()
		if obj.Crc32C == nil || obj.GetSize() != size {
			return false, nil
		}
	}
	crc, err := FileCRC32C(path)
	if err != nil {
		return false, err
	}
	return crc == obj.GetCrc32C(), nil
}

// FileCRC32C returns the CRC32C (Castagnoli) of the file at path, read in
// a stream, or the error of opening or reading it.
func FileCRC32C(path string) (uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	h := crc32.New(store.Castagnoli)
	if _, err := io.Copy(h, f); err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	return h.Sum32(), nil
}

// uploadFile uploads the file at path as the object key.
func uploadFile(ctx context.Context, u *Uploader, path, key string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if _, err := u.Upload(ctx, key, f, info.Size(), ObjectOptions{}); err != nil {
		return fmt.Errorf("upload %s: %w", path, err)
	}
	return nil
}

// SyncTally is the bookkeeping one sync shares among its concurrent
// transfers: log lines serialized for [SyncOptions.Log], and failures,
// counted in [SyncResult.Failed] and joined by [SyncTally.Err]. Package
// download uses it for the other direction.
type SyncTally struct {
	res  *SyncResult
	log  func(string)
	mu   sync.Mutex
	errs []error
}

// NewSyncTally returns a SyncTally that counts into res and logs to log
// (nil: no log).
func NewSyncTally(res *SyncResult, log func(string)) *SyncTally {
	return &SyncTally{res: res, log: log}
}

// Logf formats one log line.
func (t *SyncTally) Logf(format string, args ...any) {
	if t.log == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.log(fmt.Sprintf(format, args...))
}

// Fail records the failure of one transfer; the others go on.
func (t *SyncTally) Fail(err error) {
	atomic.AddInt64(&t.res.Failed, 1)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.errs = append(t.errs, err)
}

// Err joins every failure recorded, or returns nil.
func (t *SyncTally) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return errors.Join(t.errs...)
}
