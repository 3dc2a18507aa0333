package upload

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/store"
)

func chunkProto(p store.Part) *ferryv1.CommittedChunk {
	return &ferryv1.CommittedChunk{Index: int64(p.Number - 1), Size: p.Size, Crc32C: p.CRC32C}
}

// uploadInfo describes upload m; lastActive is the newest activity known.
func (s *Service) uploadInfo(m *manifest, lastActive ...store.Part) *ferryv1.UploadInfo {
	spec := &ferryv1.UploadSpec{
		Key:         m.Key,
		ContentType: m.ContentType,
		Metadata:    m.Metadata,
		ChunkSize:   m.ChunkSize,
		Crc32C:      m.CRC32C,
		IfNoneMatch: m.IfNoneMatch,
	}
	info := &ferryv1.UploadInfo{UploadId: m.UploadID, Spec: spec, CreatedAt: timestamppb.New(m.CreatedAt)}
	if m.Size >= 0 {
		size := m.Size
		spec.Size = &size
		info.ChunkCount = chunkCount(m.Size, m.ChunkSize)
	}
	active := m.CreatedAt
	for _, p := range lastActive {
		if p.LastModified.After(active) {
			active = p.LastModified
		}
	}
	info.ExpiresAt = timestamppb.New(active.Add(s.ttl))
	return info
}
