package upload

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/ferryhq/ferry/proto/wire"
	"github.com/ferryhq/ferry/store"
)

// manifestPrefix is where manifests live: one object per open upload.
const manifestPrefix = store.ReservedPrefix + "uploads/"

// maxManifestBytes bounds a manifest read; real ones are well under 4 KiB.
const maxManifestBytes = 64 << 10

// manifestCacheSize bounds the manifests kept in memory.
const manifestCacheSize = 4096

// manifest is the record of an open upload, stored as JSON at
// manifestPrefix+UploadID. Together with the store's multipart upload it is
// the whole state of an upload. It is written twice: pending, without
// StoreUploadID, before the store's multipart upload is created (so that a
// crash cannot leave a multipart upload no manifest names: see
// [Service.Sweep]), then whole, after; from then on it never changes.
type manifest struct {
	Version  int    `json:"version"`
	UploadID string `json:"upload_id"`
	Key      string `json:"key"`
	// StoreUploadID is the store's upload ID; empty while pending.
	StoreUploadID string            `json:"store_upload_id"`
	Size          int64             `json:"size"` // bytes; -1 until given at completion
	ChunkSize     int64             `json:"chunk_size"`
	ContentType   string            `json:"content_type,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	CRC32C        *uint32           `json:"crc32c,omitempty"` // expected whole-object CRC32C
	IfNoneMatch   bool              `json:"if_none_match,omitempty"`
	CreatedAt     time.Time         `json:"created_at"`
}

func (m *manifest) geometry() geometry { return geometry{size: m.Size, chunkSize: m.ChunkSize} }

func manifestKey(uploadID string) string { return manifestPrefix + uploadID }

// manifestCache keeps the whole manifests read or written by this process.
// They never change, so a cached one is never stale; a removed one is caught by
// the store, which answers ErrUploadNotFound for the multipart upload.
type manifestCache struct {
	mu sync.Mutex
	m  map[string]*manifest
}

func (c *manifestCache) get(id string) *manifest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[id]
}

func (c *manifestCache) put(m *manifest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]*manifest)
	}
	if len(c.m) >= manifestCacheSize {
		for k := range c.m { // evict an arbitrary entry
			delete(c.m, k)
			break
		}
	}
	c.m[m.UploadID] = m
}

func (c *manifestCache) remove(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, id)
}

// checkUploadID reports whether id has the form of an upload ID (a UUID in
// canonical form), so malformed IDs never reach the store.
func checkUploadID(id string) error {
	if id == "" {
		return wire.Errorf(wire.ErrInvalidArgument, "upload_id is empty")
	}
	if u, err := uuid.Parse(id); err != nil || u.String() != id {
		return wire.Errorf(wire.ErrInvalidArgument, "upload_id %q is not an upload ID", id)
	}
	return nil
}

func uploadNotFound(id string) error {
	return wire.Errorf(store.ErrUploadNotFound, "upload %s not found: it never existed, expired, was aborted or completed", id)
}

// pending reports whether m was written before its multipart upload
// existed and never completed: its creation failed or is in progress.
func (m *manifest) pending() bool { return m.StoreUploadID == "" }

// saveManifest writes m to the store and, unless it is pending, to the
// cache.
func (s *Service) saveManifest(ctx context.Context, m *manifest) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if _, err := s.store.PutObject(ctx, manifestKey(m.UploadID), bytes.NewReader(b), int64(len(b)),
		// Not IfNoneMatch: the key holds a fresh random UUID, and a
		// conditional put that the S3 client retries after a lost answer
		// would fail although it succeeded.
		store.PutOptions{ContentType: "application/json"}); err != nil {
		return err
	}
	if !m.pending() {
		s.manifests.put(m)
	}
	return nil
}

// loadManifest returns the manifest of upload id, from the cache or the
// store. Concurrent loads of one ID share one store read.
func (s *Service) loadManifest(ctx context.Context, id string) (*manifest, error) {
	if err := checkUploadID(id); err != nil {
		return nil, err
	}
	if m := s.manifests.get(id); m != nil {
		return m, nil
	}
	v, err, _ := s.loads.Do(id, func() (any, error) { return s.readManifest(ctx, id) })
	if err != nil {
		return nil, err
	}
	m := v.(*manifest)
	if m.pending() {
		return nil, uploadNotFound(id) // not created (yet): no client has its ID
	}
	s.manifests.put(m)
	return m, nil
}

// readManifest reads the manifest of upload id from the store, bypassing
// the cache.
func (s *Service) readManifest(ctx context.Context, id string) (*manifest, error) {
	r, _, err := s.store.ReadObject(ctx, manifestKey(id), 0, maxManifestBytes, store.ReadOptions{})
	if errors.Is(err, store.ErrNotFound) {
		return nil, uploadNotFound(id)
	}
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest of upload %s is corrupt: %w", id, err)
	}
	if m.UploadID != id || m.ChunkSize <= 0 {
		return nil, fmt.Errorf("manifest of upload %s is inconsistent", id)
	}
	return &m, nil
}

// deleteManifest removes the manifest of upload id from the store and cache.
func (s *Service) deleteManifest(ctx context.Context, id string) error {
	s.manifests.remove(id)
	return s.store.DeleteObject(ctx, manifestKey(id))
}
