package download

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/upload"
)

// Sync makes the regular files under dir match the objects under prefix,
// the reverse of [upload.Sync]: the object prefix + P becomes the file
// dir/P (P's slashes become the OS's separators). An object is skipped
// when its file exists with the same size and CRC32C (see
// [upload.SameObject]); the others are
// downloaded with d, opts.Concurrency at a time, each into a temporary file
// in the file's directory that is renamed over the file once every byte is
// checked. Objects whose relative key would leave dir (an empty, absolute
// or ".." path) are skipped and logged. With opts.Delete, regular files
// under dir with no object are removed. opts.DryRun and opts.Log work as
// in [upload.Sync]; in the result, Uploaded counts files downloaded and
// BytesSent their size in bytes.
//
// A failure of one object does not stop the others: Sync returns the counts
// and an error joining every failure, or the error of listing the objects
// or walking dir, which stops the sync.
func Sync(ctx context.Context, d *Downloader, objects ferryv1connect.ObjectServiceClient, prefix, dir string, opts upload.SyncOptions) (*upload.SyncResult, error) {
	start := time.Now()
	res := &upload.SyncResult{}
	defer func() { res.Seconds = time.Since(start).Seconds() }()
	if opts.Concurrency <= 0 {
		opts.Concurrency = 4
	}
	tally := upload.NewSyncTally(res, opts.Log)
	logf, fail := tally.Logf, tally.Fail
	remote, err := upload.ListAll(ctx, objects, prefix)
	if err != nil {
		return res, err
	}
	wanted := make(map[string]bool)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Concurrency)
	for key, obj := range remote {
		rel := strings.TrimPrefix(key, prefix)
		if rel == "" || strings.HasSuffix(rel, "/") || !filepath.IsLocal(filepath.FromSlash(rel)) {
			atomic.AddInt64(&res.Skipped, 1) // workers add to it too
			logf("skip %s: no safe local path", key)
			continue
		}
		res.Files++
		path := filepath.Join(dir, filepath.FromSlash(rel))
		wanted[path] = true
		g.Go(func() error {
			if info, err := os.Stat(path); err == nil && info.Mode().IsRegular() {
				same, err := upload.SameObject(gctx, objects, obj, path, info.Size())
				if err != nil {
					fail(err)
					return nil
				}
				if same {
					atomic.AddInt64(&res.Skipped, 1)
					return nil
				}
			}
			logf("download %s", key)
			if !opts.DryRun {
				update, end := opts.StartFile(key, obj.GetSize())
				n, err := downloadFileAtomic(gctx, d.WithProgress(update), key, path)
				end(err)
				if err != nil {
					fail(err)
					return nil
				}
				atomic.AddInt64(&res.Bytes, n)
			} else {
				atomic.AddInt64(&res.Bytes, obj.GetSize())
			}
			atomic.AddInt64(&res.Transferred, 1)
			return nil
		})
	}
	_ = g.Wait()
	if opts.Delete {
		err := filepath.WalkDir(dir, func(path string, de os.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, os.ErrNotExist) && path == dir {
					return filepath.SkipDir
				}
				return err
			}
			if !de.Type().IsRegular() || wanted[path] {
				return nil
			}
			logf("delete %s", path)
			if !opts.DryRun {
				if err := os.Remove(path); err != nil {
					fail(err)
					return nil
				}
			}
			res.Deleted++
			return nil
		})
		if err != nil {
			return res, errors.Join(tally.Err(), err)
		}
	}
	return res, tally.Err()
}

// downloadFileAtomic downloads key into a temporary file next to path and
// renames it to path, returning the object's size in bytes.
func downloadFileAtomic(ctx context.Context, d *Downloader, key, path string) (int64, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".ferry-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name()) // fails harmlessly after the rename
	defer f.Close()
	obj, err := d.DownloadAt(ctx, key, f)
	if err != nil {
		return 0, fmt.Errorf("download %q: %w", key, err)
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return 0, err
	}
	return obj.GetSize(), nil
}
