package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"connectrpc.com/connect"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/proto/ferry/v1/ferryv1connect"
	"github.com/ferryhq/ferry/upload"
)

// uploadState is what `ferry upload` keeps of an interrupted upload, so
// that running the same command again continues it: the upload ID and the
// identity of the file it was reading (size in bytes, modification time in
// nanoseconds since the Unix epoch).
type uploadState struct {
	UploadID  string `json:"upload_id"`
	Size      int64  `json:"size"`
	ModTimeNS int64  `json:"mtime_ns"`
	ChunkSize int64  `json:"chunk_size,omitempty"`
}

// uploadStatePath is where the state of the upload of the file path as key
// to server is kept: <cache>/ferry/uploads/<sha256 of server, absolute path
// and key>.json, where <cache> is FERRY_CACHE_DIR or os.UserCacheDir.
func uploadStatePath(lookupEnv lookupEnvFunc, server, path, key string) (string, error) {
	cache, ok := lookupEnv("FERRY_CACHE_DIR")
	if !ok || cache == "" {
		var err error
		if cache, err = os.UserCacheDir(); err != nil {
			return "", err
		}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256([]byte(server + "\x00" + abs + "\x00" + key))
	return filepath.Join(cache, "ferry", "uploads", hex.EncodeToString(h[:])+".json"), nil
}

// loadUploadState reads the state at path; it returns nil and no error
// when there is none or it cannot be parsed.
func loadUploadState(path string) (*uploadState, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s uploadState
	if json.Unmarshal(b, &s) != nil || s.UploadID == "" {
		return nil, nil
	}
	return &s, nil
}

// save writes s to path, creating its directory.
func (s *uploadState) save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, b, 0o600)
}

// writeFileAtomic writes b to path through a synced temporary file renamed
// over it, so that after a crash or power loss path holds either the old
// content or b.
func writeFileAtomic(path string, b []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// matches reports whether fi is the file s was made for: same size and
// modification time.
func (s *uploadState) matches(fi os.FileInfo) bool {
	return s.Size == fi.Size() && s.ModTimeNS == fi.ModTime().UnixNano()
}

// autoResume makes `ferry upload FILE KEY` continue the upload that the
// same command left interrupted, through the state file uploadStatePath.
type autoResume struct {
	stderr    io.Writer
	quiet     bool
	chunkSize int64       // the chunk size asked for, 0 for the server's
	path      string      // the state file, "" when there is none to keep
	fi        os.FileInfo // the file being uploaded
}

// prepare returns the upload ID to resume, or "" to start anew. A state
// whose file changed since (size or modification time) is stale: its
// upload is aborted (best effort) and the state removed. Errors reading the
// state only turn automatic resume off.
func (a *autoResume) prepare(ctx context.Context, client ferryv1connect.UploadServiceClient, lookupEnv lookupEnvFunc, server, file, key string) (string, error) {
	fi, err := os.Stat(file)
	if err != nil || !fi.Mode().IsRegular() {
		return "", nil // uploadFile reports the error, or streams the file
	}
	path, err := uploadStatePath(lookupEnv, server, file, key)
	if err != nil {
		return "", nil
	}
	a.path, a.fi = path, fi
	state, err := loadUploadState(path)
	if err != nil || state == nil {
		return "", nil
	}
	if !state.matches(fi) {
		a.say("%s changed since upload %s was interrupted: starting anew\n", file, state.UploadID)
		_, _ = client.AbortUpload(ctx, connect.NewRequest(&ferryv1.AbortUploadRequest{UploadId: state.UploadID}))
		os.Remove(path)
		return "", nil
	}
	if err := checkResume(ctx, client, state.UploadID, key); err != nil {
		if connect.CodeOf(err) == connect.CodeNotFound || errors.As(err, new(usageError)) {
			a.say("upload %s cannot be continued (%v): starting anew\n", state.UploadID, err)
			os.Remove(path)
			return "", nil
		}
		return "", err
	}
	a.say("continuing upload %s\n", state.UploadID)
	return state.UploadID, nil
}

// created records the state of the new upload uploadID at once (an
// [upload.UploaderOptions.Created] callback), so that running the same
// command again continues it even after this process is killed or the
// machine restarts.
func (a *autoResume) created(uploadID string) {
	if a.path != "" {
		_ = a.state(uploadID).save(a.path)
	}
}

// finish keeps the state of an interrupted upload, and removes it after
// any other outcome.
func (a *autoResume) finish(err error) {
	if a.path == "" {
		return
	}
	var interrupted *upload.InterruptedError
	if errors.As(err, &interrupted) {
		if a.state(interrupted.UploadID).save(a.path) == nil {
			a.say("To continue upload %s, run the same command again.\n", interrupted.UploadID)
		}
		return
	}
	os.Remove(a.path)
}

// state is the state to keep for the upload uploadID of a.fi.
func (a *autoResume) state(uploadID string) *uploadState {
	return &uploadState{UploadID: uploadID, Size: a.fi.Size(), ModTimeNS: a.fi.ModTime().UnixNano(), ChunkSize: a.chunkSize}
}

func (a *autoResume) say(format string, args ...any) {
	if !a.quiet {
		fmt.Fprintf(a.stderr, format, args...)
	}
}
