//go:build unix

package diskstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockName is the file in the store's directory that a [Store] holds an
// exclusive flock(2) on for as long as it is open.
const lockName = "lock"

// lockDir takes the exclusive lock on directory dir, or fails at once if
// another Store, in this process or another, holds it. The kernel drops
// the lock when its file is closed or its process dies, even by SIGKILL.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fsError("", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("diskstore: %s is in use by another process (it holds the lock on %s): one directory serves one ferry server", dir, path)
		}
		return nil, fsError("locking "+path, err)
	}
	return f, nil
}

// locked reports whether lockDir holds the directory exclusively, so that
// everything in tmp/ at startup is a dead process's.
const locked = true
