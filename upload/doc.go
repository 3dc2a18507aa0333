// Package upload takes files into the object store as resumable uploads of
// fixed-size chunks, and holds the Go client that sends them.
//
// # Model
//
// An upload has an upload ID (a random UUID) and a chunk size fixed when it
// is created. Chunk i (0-based) covers bytes [i*chunkSize,
// min((i+1)*chunkSize, size)) and is stored as S3 part i+1 of one multipart
// upload. S3's rules apply to every store: parts of at least 5 MiB except
// the last, at most 10,000 parts.
//
// The state of an upload lives in the object store, never only in server
// memory: the store's multipart upload says which chunks are committed
// (ListParts), and a small JSON manifest at
// [store.ReservedPrefix]+"uploads/<upload ID>" records the key, the store's
// upload ID, the size and chunk size, and the object's attributes. The
// manifest is written once before the store's multipart upload exists
// (pending, so that a crash cannot leave an upload nothing names) and once
// after; then it never changes, so any server instance can
// take any chunk of any upload, a restart loses nothing, and several
// servers behind a load balancer need no sticky sessions and no locks.
//
// A chunk is committed only when its part is stored and its CRC32C verified
// (the store checks it while streaming the part). Sending a committed chunk
// again replaces the part with identical bytes, so it is harmless.
// Completion lists the parts, checks every chunk is present with the right
// size, combines the parts' CRC32Cs into the whole-object CRC32C
// ([store.CombineCRC32C]) and compares it with the client's, and only then
// completes the multipart upload, which makes the object visible under its
// key atomically. Then it writes a completion record at
// [store.ReservedPrefix]+"completed/<upload ID>" before the manifest is
// removed, so that a completion repeated after its answer was lost (or
// racing it, on another instance, after a restart) returns the same object
// for [Config.CompletedTTL] (completed.go).
//
// # Layers
//
// [Service] holds the rules (rules.go, service.go: no Connect types) and
// implements [ferryv1connect.UploadServiceHandler] on top of them
// (handler.go): the client-streaming Upload and the unary CreateUpload,
// PutChunk, GetUpload, CompleteUpload and AbortUpload that browsers use both
// call the same methods. [wire.ConnectError] is the one place where store and
// domain errors become Connect codes; package download uses it too.
//
// Abandoned uploads, and what crashes leave (manifests of finished
// uploads, multipart uploads whose creation was cut short, completion
// records past their time), are removed by [Service.Sweep], run
// periodically by [Service.RunSweeper]; it is safe to run on every
// instance at once because each of its steps is idempotent.
package upload
