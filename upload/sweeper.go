package upload

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/ferryhq/ferry/store"
)

// orphanMinAge is how old, by the store's clock, a multipart upload that
// no manifest names must be before [Service.Sweep] aborts it: more than
// the store's clock may run behind this server's, so that an upload whose
// creation is in progress, created after the sweep listed the manifests,
// is never taken for an orphan.
const orphanMinAge = 10 * time.Second

// Sweep removes what expired uploads and crashes leave in the store, and
// returns how many uploads and completion records it removed:
//
//   - an upload idle for longer than the TTL (no chunk committed since):
//     its multipart upload is aborted and its manifest removed. Its last
//     activity is the newest of its creation and its parts' times;
//   - a manifest older than the TTL whose multipart upload is gone
//     (completed or aborted by a process that died before removing it);
//   - a pending manifest older than the TTL, left by a creation that a
//     crash cut short: the multipart uploads of its key that no manifest
//     names (the one that creation made, if it made one) are aborted, and
//     the manifest removed. Listing them takes every manifest, so this is
//     done only when such a manifest exists, and not for a key with a
//     creation younger than the TTL;
//   - a completion record older than [Config.CompletedTTL].
//
// Sweep is safe to run on several instances at once: every step (abort,
// delete) is idempotent, and a chunk that races with the abort of an
// expired upload fails with NotFound, as it should.
func (s *Service) Sweep(ctx context.Context) (int, error) {
	now := s.now()
	removed := 0
	var (
		ids     []string    // every manifest listed
		pending []*manifest // pending manifests older than the TTL
	)
	err := s.eachObject(ctx, manifestPrefix, func(obj store.ObjectInfo) {
		id := strings.TrimPrefix(obj.Key, manifestPrefix)
		ids = append(ids, id)
		if now.Sub(obj.LastModified) <= s.ttl {
			return // created recently: cannot be idle for the TTL
		}
		m, err := s.readManifest(ctx, id)
		if errors.Is(err, store.ErrUploadNotFound) {
			return // removed meanwhile
		}
		if err != nil {
			s.log.WarnContext(ctx, "sweep upload", "manifest", obj.Key, "err", err)
			return
		}
		if m.pending() {
			pending = append(pending, m)
			return
		}
		gone, err := s.sweepOne(ctx, m, now)
		if err != nil {
			if ctx.Err() == nil {
				s.log.WarnContext(ctx, "sweep upload", "manifest", obj.Key, "err", err)
			}
			return
		}
		if gone {
			removed++
		}
	})
	if err != nil {
		return removed, err
	}
	if len(pending) > 0 {
		n, err := s.sweepPending(ctx, pending, ids, now)
		removed += n
		if err != nil {
			return removed, err
		}
	}
	n, err := s.sweepCompletions(ctx, now)
	return removed + n, err
}

// eachObject calls fn with every object under prefix, in key order.
func (s *Service) eachObject(ctx context.Context, prefix string, fn func(store.ObjectInfo)) error {
	after := ""
	for {
		page, err := s.store.ListObjects(ctx, prefix, after, 1000)
		if err != nil {
			return err
		}
		for _, obj := range page.Objects {
			after = obj.Key
			fn(obj)
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if !page.IsTruncated || len(page.Objects) == 0 {
			return nil
		}
	}
}

// sweepOne removes upload m if it has been idle longer than the TTL, or
// if its multipart upload is gone.
func (s *Service) sweepOne(ctx context.Context, m *manifest, now time.Time) (bool, error) {
	parts, _, err := s.listChunks(ctx, m, 0, store.MaxParts)
	if errors.Is(err, store.ErrUploadNotFound) {
		// Completed or aborted, but the manifest stayed behind.
		return true, s.deleteManifest(ctx, m.UploadID)
	}
	if err != nil {
		return false, err
	}
	last := m.CreatedAt
	for _, p := range parts {
		if p.LastModified.After(last) {
			last = p.LastModified
		}
	}
	if now.Sub(last) <= s.ttl {
		return false, nil
	}
	s.log.InfoContext(ctx, "aborting expired upload", "upload_id", m.UploadID, "key", m.Key, "idle", now.Sub(last).Round(time.Second))
	return true, s.abort(ctx, m)
}

// sweepPending removes the pending manifests, older than the TTL, of
// creations that a crash cut short, and aborts the multipart uploads of
// their keys that none of the manifests ids (every one listed since now)
// names. It returns how many pending manifests it removed.
func (s *Service) sweepPending(ctx context.Context, pending []*manifest, ids []string, now time.Time) (int, error) {
	byKey := make(map[string][]*manifest)
	for _, m := range pending {
		byKey[m.Key] = append(byKey[m.Key], m)
	}
	// Every manifest, to know which multipart uploads are in use: without
	// all of them, one in use could look orphaned.
	named := make(map[string]bool)
	for _, id := range ids {
		m := s.manifests.get(id)
		if m == nil {
			var err error
			if m, err = s.readManifest(ctx, id); errors.Is(err, store.ErrUploadNotFound) {
				continue // removed meanwhile
			} else if err != nil {
				return 0, err
			}
		}
		switch {
		case !m.pending():
			named[m.StoreUploadID] = true
		case now.Sub(m.CreatedAt) <= s.ttl:
			delete(byKey, m.Key) // a creation of this key may be in progress: next time
		}
	}
	removed := 0
	for key, ms := range byKey {
		young, err := s.abortOrphans(ctx, key, named, now)
		if err != nil {
			if ctx.Err() != nil {
				return removed, ctx.Err()
			}
			s.log.WarnContext(ctx, "sweep the uploads of an interrupted creation", "key", key, "err", err)
			if storeFault(err) {
				continue // next time
			}
			// The store refuses the key itself: it holds no upload of it.
		}
		if young {
			continue // next time, when it is old enough to tell
		}
		for _, m := range ms {
			if err := s.deleteManifest(ctx, m.UploadID); err != nil {
				return removed, err
			}
			removed++
		}
	}
	return removed, nil
}

// abortOrphans aborts the multipart uploads of key older than
// orphanMinAge (before now) that no manifest names. It reports whether
// one that no manifest names is too young for that yet.
func (s *Service) abortOrphans(ctx context.Context, key string, named map[string]bool, now time.Time) (young bool, err error) {
	marker := ""
	for {
		res, err := s.store.ListMultipartUploads(ctx, key, marker, 1000)
		if err != nil {
			return young, err
		}
		for _, u := range res.Uploads {
			switch {
			case named[u.UploadID]:
				continue
			case !u.Initiated.Before(now.Add(-orphanMinAge)):
				young = true
				continue
			}
			s.log.InfoContext(ctx, "aborting a multipart upload no manifest names", "key", key, "initiated", u.Initiated)
			if err := s.store.AbortMultipartUpload(ctx, key, u.UploadID); err != nil && !errors.Is(err, store.ErrUploadNotFound) {
				return young, err
			}
		}
		if !res.IsTruncated || res.NextUploadIDMarker == "" {
			return young, nil
		}
		marker = res.NextUploadIDMarker
	}
}

// sweepCompletions removes the completion records older than the
// completed TTL, and returns how many.
func (s *Service) sweepCompletions(ctx context.Context, now time.Time) (int, error) {
	var old []string
	err := s.eachObject(ctx, completedPrefix, func(obj store.ObjectInfo) {
		if now.Sub(obj.LastModified) > s.completedTTL {
			old = append(old, obj.Key)
		}
	})
	removed := 0
	for _, key := range old {
		if err := s.store.DeleteObject(ctx, key); err != nil {
			return removed, err
		}
		removed++
	}
	return removed, err
}

// RunSweeper calls [Service.Sweep] every interval until ctx is done, the
// first time at once. An interval of 0 means one hour.
func (s *Service) RunSweeper(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = time.Hour
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := s.Sweep(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.WarnContext(ctx, "sweep", "err", err)
		case n > 0:
			s.log.InfoContext(ctx, "sweep", "removed", n)
		default:
			s.log.DebugContext(ctx, "sweep", "removed", 0)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
