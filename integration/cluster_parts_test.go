package integration

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/ferryhq/ferry/store"
	"github.com/ferryhq/ferry/store/s3store"
)

// TestClusterSamePartTwice is the race issue 17 found, on real distributed
// MinIO: one part number stored twice at once, through two nodes (as a
// chunk retried on another ferry instance while its first attempt is still
// being written), while the upload's parts are listed again and again
// through a third. Distributed MinIO may then list the part with an empty
// ETag and no checksum (no ETag has its read quorum yet); s3store must
// answer such a listing with store.ErrConflict, which ferry's clients
// retry, and never with another error (which the upload service answers as
// internal). Every listing that succeeds must show only committed parts
// with their CRC32C, and once both writes are done the part is listed
// committed, with the bytes both sent.
//
// Whether a round hits the window is up to the machine: the test logs how
// many listings were conflicts (the issue saw 7 in 664) and fails only on
// a wrong answer, never on a count.
func TestClusterSamePartTwice(t *testing.T) {
	t.Parallel()
	mc := startMinIOCluster(t, 4)
	bucket := mc.newBucket(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stores := make([]*s3store.Store, 3)
	for i := range stores {
		env := mc.env(i)
		s, err := s3store.New(ctx, s3store.Config{Endpoint: env.endpoint, Insecure: true, Bucket: bucket, AccessKey: env.accessKey, SecretKey: env.secretKey})
		if err != nil {
			t.Fatal(err)
		}
		stores[i] = s
	}
	const (
		rounds = 40
		key    = "race/same-part"
	)
	part := bytes.Repeat([]byte("same part, twice at once; "), store.MinPartSize/26+1)[:store.MinPartSize]
	crc := store.CRC32C(part)
	var listings, conflicts int
	for round := range rounds {
		var id string
		err := whileUnavailable(ctx, func() (err error) {
			id, err = stores[0].CreateMultipartUpload(ctx, key, store.CreateOptions{})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[w] = whileUnavailable(ctx, func() error {
					_, err := stores[w].UploadPart(ctx, key, id, 1, bytes.NewReader(part), int64(len(part)), crc)
					return err
				})
			}()
		}
		writing := make(chan struct{})
		go func() { wg.Wait(); close(writing) }()
		for done := false; !done; {
			select {
			case <-writing:
				done = true
			default:
			}
			res, err := stores[2].ListParts(ctx, key, id, 0, 1000)
			listings++
			switch {
			case errors.Is(err, store.ErrConflict):
				conflicts++
			case errors.Is(err, store.ErrUnavailable):
				// A loaded node answers SlowDown: list again.
			case err != nil:
				t.Fatalf("round %d: ListParts while part 1 is written twice = %v, want the parts or ErrConflict", round, err)
			default:
				for _, p := range res.Parts {
					if p.Number != 1 || p.ETag == "" || p.Size != int64(len(part)) || p.CRC32C != crc {
						t.Fatalf("round %d: ListParts listed %+v, want only part 1 as committed (%d bytes, CRC32C %08x)", round, p, len(part), crc)
					}
				}
			}
		}
		for w, err := range errs {
			if err != nil {
				t.Fatalf("round %d: UploadPart through node %d = %v", round, w+1, err)
			}
		}
		// Both writes are done: the part is committed, and listing it
		// answers (a conflict now would be a listing that never clears).
		var parts []store.Part
		deadline := time.Now().Add(30 * time.Second)
		for {
			res, err := stores[2].ListParts(ctx, key, id, 0, 1000)
			if err == nil {
				parts = res.Parts
				break
			}
			if !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrUnavailable) || time.Now().After(deadline) {
				t.Fatalf("round %d: ListParts after both writes = %v", round, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if len(parts) != 1 || parts[0].CRC32C != crc || parts[0].Size != int64(len(part)) {
			t.Fatalf("round %d: after both writes, ListParts = %+v, want part 1 committed", round, parts)
		}
		if err := whileUnavailable(ctx, func() error { return stores[0].AbortMultipartUpload(ctx, key, id) }); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d rounds of part 1 written twice at once through two MinIO nodes: %d listings through a third, %d of them ErrConflict (a part listed without an ETag)", rounds, listings, conflicts)
}

// whileUnavailable calls f until it returns an error other than
// [store.ErrUnavailable] (MinIO nodes on a loaded machine answer SlowDown,
// HTTP 503, which every client retries), at most 20 times, backing off
// from 50 ms to 1 s between calls.
func whileUnavailable(ctx context.Context, f func() error) error {
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		err := f()
		if err != nil && !errors.Is(err, store.ErrUnavailable) {
			err = backoff.Permanent(err)
		}
		return struct{}{}, err
	}, backoff.WithBackOff(&backoff.ExponentialBackOff{
		InitialInterval: 50 * time.Millisecond, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: time.Second,
	}), backoff.WithMaxTries(20))
	return err
}
