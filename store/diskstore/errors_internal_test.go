package diskstore

import (
	"errors"
	"io/fs"
	"syscall"
	"testing"

	"github.com/ferryhq/ferry/store"
)

// TestFSErrorOutOfSpace: a full disk or quota is ErrInsufficientStorage
// (retryable), with the system's error kept for logs; other errors are not.
func TestFSErrorOutOfSpace(t *testing.T) {
	t.Parallel()
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EDQUOT} {
		err := fsError("copying data", &fs.PathError{Op: "write", Path: "/d/tmp/part-1", Err: errno})
		if !errors.Is(err, store.ErrInsufficientStorage) || !errors.Is(err, errno) {
			t.Errorf("fsError(%v) = %v, want it to wrap ErrInsufficientStorage and %v", errno, err, errno)
		}
	}
	err := fsError("", &fs.PathError{Op: "open", Path: "/d/x", Err: syscall.EACCES})
	if errors.Is(err, store.ErrInsufficientStorage) || !errors.Is(err, fs.ErrPermission) {
		t.Errorf("fsError(EACCES) = %v, want a permission error only", err)
	}
}
