package wire

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/store"
)

// Object converts a store object to its wire form, so that every service
// and client describes objects the same way: LastModified only when the
// store knows it, CRC32C only when the store has it (HasCRC32C).
func Object(info store.ObjectInfo) *ferryv1.Object {
	o := &ferryv1.Object{
		Key:         info.Key,
		Size:        info.Size,
		Etag:        info.ETag,
		ContentType: info.ContentType,
		Metadata:    info.Metadata,
	}
	if !info.LastModified.IsZero() {
		o.LastModified = timestamppb.New(info.LastModified)
	}
	if info.HasCRC32C {
		crc := info.CRC32C
		o.Crc32C = &crc
	}
	return o
}
