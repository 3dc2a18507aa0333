package upload

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/ferryhq/ferry/store"
)

// Sweep aborts every upload idle for longer than the TTL and removes its
// manifest, and removes manifests whose multipart upload is gone (completed
// or aborted by a process that died before removing them). An upload's
// last activity is the newest of its creation and its parts' times.
// It returns how many uploads it removed.
//
// Sweep is safe to run on several instances at once: every step (abort,
// delete) is idempotent, and a chunk that races with the abort of an
// expired upload fails with NotFound, as it should.
func (s *Service) Sweep(ctx context.Context) (int, error) {
	now := s.now()
	removed := 0
	after := ""
	for {
		page, err := s.store.ListObjects(ctx, manifestPrefix, after, 1000)
		if err != nil {
			return removed, err
		}
		for _, obj := range page.Objects {
			after = obj.Key
			if now.Sub(obj.LastModified) <= s.ttl {
				continue // created recently: cannot be idle for the TTL
			}
			gone, err := s.sweepOne(ctx, strings.TrimPrefix(obj.Key, manifestPrefix), now)
			if err != nil {
				if ctx.Err() != nil {
					return removed, ctx.Err()
				}
				s.log.WarnContext(ctx, "sweep upload", "manifest", obj.Key, "err", err)
				continue
			}
			if gone {
				removed++
			}
		}
		if !page.IsTruncated {
			return removed, nil
		}
	}
}

// sweepOne removes upload id if it has been idle longer than the TTL.
func (s *Service) sweepOne(ctx context.Context, id string, now time.Time) (bool, error) {
	m, err := s.readManifest(ctx, id)
	if errors.Is(err, store.ErrUploadNotFound) {
		return false, nil // removed meanwhile
	}
	if err != nil {
		return false, err
	}
	last := m.CreatedAt
	marker := 0
	for {
		res, err := s.store.ListParts(ctx, m.Key, m.StoreUploadID, marker, 1000)
		if errors.Is(err, store.ErrUploadNotFound) {
			// Completed or aborted, but the manifest stayed behind.
			return true, s.deleteManifest(ctx, id)
		}
		if err != nil {
			return false, err
		}
		for _, p := range res.Parts {
			if p.LastModified.After(last) {
				last = p.LastModified
			}
		}
		if !res.IsTruncated {
			break
		}
		marker = res.NextPartNumberMarker
	}
	if now.Sub(last) <= s.ttl {
		return false, nil
	}
	s.log.InfoContext(ctx, "aborting expired upload", "upload_id", id, "key", m.Key, "idle", now.Sub(last).Round(time.Second))
	return true, s.abort(ctx, m)
}

// RunSweeper calls [Service.Sweep] every interval until ctx is done.
// An interval of 0 means one hour.
func (s *Service) RunSweeper(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = time.Hour
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if n, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "sweep", "err", err)
		} else if n > 0 {
			s.log.InfoContext(ctx, "sweep", "removed", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
