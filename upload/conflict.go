package upload

import (
	"context"
	"errors"

	"golang.org/x/sync/errgroup"

	"github.com/ferryhq/ferry/proto/wire"
	"github.com/ferryhq/ferry/store"
)

// maxConflictRequests is how many store requests one [Service.checkKeyFree]
// has in flight at once.
const maxConflictRequests = 8

// checkKeyFree returns an error wrapping [store.ErrKeyConflict] when key
// cannot name a new object without making another object unlistable or
// unstorable: when an object exists at one of key's ancestors (the key up
// to one of its "/": "d" and "d/a" for "d/a/b"), or when objects exist
// under key+"/". S3 servers on a file system cannot keep both: MinIO stores
// both but lists only the shorter key (minio/minio#18148), POSIX gateways
// such as versitygw refuse the second one. The disk store could keep both,
// but the rule is the same on every store.
//
// The service calls it when an upload is created, before the one-shot
// PutObject, and again just before completion makes the object visible
// (an object may have appeared meanwhile). It costs one StatObject per
// ancestor and one ListObjects of at most one key: at most
// [store.MaxKeySegments] requests for a valid key, [maxConflictRequests]
// at a time. Errors of the store (unavailable, canceled) are returned as
// they are.
//
// The check and the write that follows are not atomic: two servers that
// create "d/a" and "d/a/b" at the same instant may both pass it, and
// then MinIO lists only "d/a" (versitygw refuses one of the writes, which
// the s3 store reports as [store.ErrKeyConflict] too). The window is the
// time between the check and the store's write (one request); closing it
// would need a lock shared by every server.
func (s *Service) checkKeyFree(ctx context.Context, key string) error {
	var ancestors []string
	for i := range len(key) {
		if key[i] == '/' {
			ancestors = append(ancestors, key[:i])
		}
	}
	found := make([]bool, len(ancestors)) // found[i]: ancestors[i] is an object
	var child string                      // an object under key+"/"
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(maxConflictRequests)
	g.Go(func() error {
		res, err := s.store.ListObjects(gctx, key+"/", "", 1)
		if err == nil && len(res.Objects) > 0 {
			child = res.Objects[0].Key
		}
		return err
	})
	for i, a := range ancestors {
		g.Go(func() error {
			_, err := s.store.StatObject(gctx, a)
			switch {
			case err == nil:
				found[i] = true
				return nil
			case errors.Is(err, store.ErrNotFound):
				return nil
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for i, ok := range found {
		if ok {
			return wire.Errorf(store.ErrKeyConflict, "an object exists under %q, a parent of key %q: a key cannot name both an object and a folder of objects; delete %q or choose another key",
				ancestors[i], key, ancestors[i])
		}
	}
	if child != "" {
		return wire.Errorf(store.ErrKeyConflict, "objects exist under %q (such as %q): a key cannot name both an object and a folder of objects; delete them or choose another key",
			key+"/", child)
	}
	return nil
}
