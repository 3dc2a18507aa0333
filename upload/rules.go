package upload

import (
	"strings"
	"unicode"

	"github.com/ferryhq/ferry/proto/wire"
	"github.com/ferryhq/ferry/store"
)

// Defaults for [Config].
const (
	// DefaultChunkSize is the chunk size chosen when a client asks for none:
	// 7 MiB, so an object of up to 68 GiB fits in S3's 10,000 parts; larger
	// objects get larger chunks. It is the largest whole number of MiB whose
	// message fits the read and write buffers of at most 8 MiB that
	// connect-go recycles: with 8 MiB chunks every message allocated and
	// grew a fresh 16 MiB buffer, which cost the server twice the CPU per
	// GiB uploaded (see docs/benchmarks.md).
	DefaultChunkSize = 7 << 20
	// DefaultMaxChunkSize is the largest chunk a server accepts unless
	// configured otherwise: 64 MiB, so objects of up to 625 GiB can be
	// uploaded. Each chunk in flight is held in server memory once.
	DefaultMaxChunkSize = 64 << 20
	// maxMetadataBytes is S3's limit on the total size of user metadata.
	maxMetadataBytes = 2 << 10
	// maxContentTypeBytes bounds the content type; HTTP has no limit of its
	// own, but a MIME type longer than this is not one.
	maxContentTypeBytes = 256
)

// geometry is the fixed layout of an upload's chunks.
type geometry struct {
	size      int64 // total bytes, -1 when not known yet
	chunkSize int64 // bytes per chunk, all but the last
}

// chunkCount returns the number of chunks of an object of size bytes: at
// least 1, because S3 needs one (possibly empty) part even for an empty object.
func chunkCount(size, chunkSize int64) int64 {
	if size <= 0 {
		return 1
	}
	return ceilDiv(size, chunkSize)
}

// ceilDiv returns a/b rounded up, for a >= 0 and b > 0, without the overflow
// of (a+b-1)/b when a is near the largest int64.
func ceilDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 {
		q++
	}
	return q
}

// chunkLen returns the length in bytes of chunk index of an object of size bytes.
func chunkLen(index, size, chunkSize int64) int64 {
	return min(chunkSize, size-index*chunkSize)
}

// chooseChunkSize returns the chunk size for an upload of size bytes (-1 when
// unknown) when the client asked for requested bytes (0: no preference). The
// chosen size is at least store.MinPartSize unless the object fits in one
// chunk, at most maxChunk, and keeps the object within store.MaxParts chunks.
func chooseChunkSize(size, requested, defaultChunk, maxChunk int64) (int64, error) {
	if requested < 0 {
		return 0, wire.Errorf(wire.ErrInvalidArgument, "chunk_size must not be negative, got %d", requested)
	}
	chunk := requested
	if chunk == 0 {
		chunk = defaultChunk
		if size > 0 {
			// Grow in whole MiB until the object fits in MaxParts chunks.
			if need := ceilDiv(size, store.MaxParts); need > chunk {
				chunk = ceilDiv(need, 1<<20) << 20 // whole MiB
			}
		}
	}
	if chunk > maxChunk {
		if requested == 0 {
			return 0, wire.Errorf(wire.ErrInvalidArgument, "object of %d bytes is too large: it needs chunks over this server's maximum of %d bytes (S3 allows at most %d parts)", size, maxChunk, store.MaxParts)
		}
		return 0, wire.Errorf(wire.ErrInvalidArgument, "chunk_size %d is over this server's maximum of %d bytes", chunk, maxChunk)
	}
	if chunk < store.MinPartSize && (size < 0 || size > chunk) {
		return 0, wire.Errorf(wire.ErrInvalidArgument, "chunk_size %d is under %d bytes: S3 requires parts of at least 5 MiB except the last", chunk, store.MinPartSize)
	}
	if size >= 0 && chunkCount(size, chunk) > store.MaxParts {
		return 0, wire.Errorf(wire.ErrInvalidArgument, "%d bytes in chunks of %d bytes is %d chunks; S3 allows at most %d parts", size, chunk, chunkCount(size, chunk), store.MaxParts)
	}
	return chunk, nil
}

// checkChunk reports whether a chunk of n bytes may be chunk index of an
// upload with geometry g.
func (g geometry) checkChunk(index, n int64) error {
	if index < 0 {
		return wire.Errorf(wire.ErrInvalidArgument, "chunk index %d is negative", index)
	}
	if g.size >= 0 {
		count := chunkCount(g.size, g.chunkSize)
		if index >= count {
			return wire.Errorf(wire.ErrInvalidArgument, "chunk index %d is out of range: the object of %d bytes has %d chunks (0 to %d)", index, g.size, count, count-1)
		}
		if want := chunkLen(index, g.size, g.chunkSize); n != want {
			return wire.Errorf(wire.ErrInvalidArgument, "chunk %d must be %d bytes, got %d", index, want, n)
		}
		return nil
	}
	if index >= store.MaxParts {
		return wire.Errorf(wire.ErrInvalidArgument, "chunk index %d is out of range: S3 allows at most %d parts", index, store.MaxParts)
	}
	if n > g.chunkSize {
		return wire.Errorf(wire.ErrInvalidArgument, "chunk %d is %d bytes, over the upload's chunk size of %d", index, n, g.chunkSize)
	}
	if n == 0 && index > 0 {
		return wire.Errorf(wire.ErrInvalidArgument, "chunk %d is empty: only the single chunk of an empty object may be", index)
	}
	return nil
}

// checkContentType reports whether s may be stored as a content type.
func checkContentType(s string) error {
	if len(s) > maxContentTypeBytes {
		return wire.Errorf(wire.ErrInvalidArgument, "content_type is %d bytes, the limit is %d", len(s), maxContentTypeBytes)
	}
	if !printableASCII(s) {
		return wire.Errorf(wire.ErrInvalidArgument, "content_type must be printable ASCII")
	}
	return nil
}

// checkMetadata reports whether md may be stored as S3 user metadata: keys
// of lower-case letters, digits and '-', values of printable ASCII (S3 sends
// them as HTTP headers), at most 2 KiB in all (S3's limit).
func checkMetadata(md map[string]string) error {
	total := 0
	for k, v := range md {
		if k == "" || strings.IndexFunc(k, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-')
		}) >= 0 {
			return wire.Errorf(wire.ErrInvalidArgument, "metadata key %q must be lower-case letters, digits and '-'", k)
		}
		if !printableASCII(v) {
			return wire.Errorf(wire.ErrInvalidArgument, "metadata value of %q must be printable ASCII", k)
		}
		total += len(k) + len(v)
	}
	if total > maxMetadataBytes {
		return wire.Errorf(wire.ErrInvalidArgument, "metadata is %d bytes, S3 allows at most %d", total, maxMetadataBytes)
	}
	return nil
}

func printableASCII(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return r > unicode.MaxASCII || unicode.IsControl(r) }) < 0
}

// chunkMismatch is the error of a chunk whose bytes do not match the
// CRC32C sent with it (n bytes, chunk index): the store kept nothing, and
// the client should send the chunk again.
func chunkMismatch(index int64, crc uint32, n int64) error {
	return wire.Errorf(store.ErrChecksumMismatch, "chunk %d: crc32c %08x does not match its %d bytes; nothing was stored, send it again", index, crc, n)
}

// alreadyExists is the error of an if_none_match upload that met an object
// under its key; then says what became of the upload ("the upload was
// aborted", or, for a stream that had created none, "nothing was stored").
func alreadyExists(key, then string) error {
	return wire.Errorf(wire.ErrAlreadyExists, "an object already exists under %q and the upload asked for if_none_match; %s", key, then)
}
