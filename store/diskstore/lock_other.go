//go:build !unix

package diskstore

import "os"

// lockDir does nothing where flock(2) does not exist: the directory is not
// guarded against a second process.
func lockDir(string) (*os.File, error) { return nil, nil }

// locked reports whether lockDir holds the directory exclusively; without
// it, a temp file may belong to another live process.
const locked = false
