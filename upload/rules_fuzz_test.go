package upload

import (
	"testing"

	"google.golang.org/protobuf/proto"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/store"
)

// FuzzUploadRequest decodes arbitrary bytes as an UploadRequest, the message
// of the Upload stream, and runs every rule the service applies to it. No
// input may panic, and whatever the rules accept must be consistent with
// S3's limits: chunk sizes within bounds, at most 10,000 chunks, and a chunk
// that lies inside the object. CI runs it for a bounded time (-fuzztime).
func FuzzUploadRequest(f *testing.F) {
	seed := func(m *ferryv1.UploadRequest, size, chunk int64) {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, size, chunk)
	}
	seed(createMsg(&ferryv1.UploadSpec{Key: "a/b", Size: ptr(int64(10 << 20)), ChunkSize: 5 << 20, Metadata: map[string]string{"k": "v"}}), 10<<20, 5<<20)
	seed(createMsg(&ferryv1.UploadSpec{Key: "x", Size: ptr(int64(1<<63 - 1))}), -1, 8<<20)
	seed(chunkMsg(svcChunk(1, make([]byte, 100))), 5<<20+100, 5<<20)
	seed(chunkMsg(&ferryv1.Chunk{Index: 1 << 62}), -1, 5<<20)
	seed(resumeMsg("6f1c1a4e-0d5b-4a53-9d2c-5a1f7e0b9c3d"), 0, 5<<20)
	seed(finishMsg(ptr(int64(-1)), nil), 3, 5<<20)

	f.Fuzz(func(t *testing.T, raw []byte, size, chunkSize int64) {
		var req ferryv1.UploadRequest
		if err := proto.Unmarshal(raw, &req); err != nil {
			return // the RPC layer answers InvalidArgument
		}
		switch m := req.GetMessage().(type) {
		case *ferryv1.UploadRequest_Header:
			if spec := m.Header.GetCreate(); spec != nil {
				checkSpec(t, spec)
			} else if id := m.Header.GetUploadId(); checkUploadID(id) == nil && len(id) != 36 {
				t.Fatalf("upload ID %q accepted", id)
			}
		case *ferryv1.UploadRequest_Chunk:
			g := geometry{size: size, chunkSize: chunkSize}
			if chunkSize < store.MinPartSize || chunkSize > DefaultMaxChunkSize || size < -1 {
				return // not a geometry create() can produce
			}
			if size >= 0 && chunkCount(size, chunkSize) > store.MaxParts {
				return
			}
			index, n := m.Chunk.GetIndex(), int64(len(m.Chunk.GetData()))
			if g.checkChunk(index, n) != nil {
				return
			}
			if index < 0 || n > chunkSize || index >= store.MaxParts {
				t.Fatalf("chunk %d of %d bytes accepted in %+v", index, n, g)
			}
			if size >= 0 && (index >= chunkCount(size, chunkSize) || index*chunkSize+n > size) {
				t.Fatalf("chunk %d of %d bytes accepted past the end of %+v", index, n, g)
			}
		}
	})
}

// checkSpec applies create's rules to spec and checks what they accept.
func checkSpec(t *testing.T, spec *ferryv1.UploadSpec) {
	if store.ValidateKey(spec.GetKey()) != nil || checkMetadata(spec.GetMetadata()) != nil || checkContentType(spec.GetContentType()) != nil {
		return
	}
	size := int64(-1)
	if spec.Size != nil {
		if size = spec.GetSize(); size < 0 {
			return
		}
	}
	chunk, err := chooseChunkSize(size, spec.GetChunkSize(), DefaultChunkSize, DefaultMaxChunkSize)
	if err != nil {
		return
	}
	switch {
	case chunk <= 0 || chunk > DefaultMaxChunkSize:
		t.Fatalf("chunk size %d accepted for size %d", chunk, size)
	case size >= 0 && chunkCount(size, chunk) > store.MaxParts:
		t.Fatalf("size %d in chunks of %d is %d chunks", size, chunk, chunkCount(size, chunk))
	case chunk < store.MinPartSize && (size < 0 || size > chunk):
		t.Fatalf("chunk size %d under S3's minimum accepted for size %d", chunk, size)
	}
}
