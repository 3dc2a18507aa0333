// Package download streams objects out of the store and manages stored
// objects, and holds the Go client that reads them.
//
// [Service] implements DownloadService.Download as a server stream: one
// header message with the object's attributes and the range served, then
// data messages of at most [MaxDataMessage] bytes (1 MiB), well under the
// 4 MiB that stock gRPC clients accept by default. offset and length select
// a range, so an interrupted download resumes where it stopped; if_match
// pins the object's ETag, so a resumed download never mixes two versions.
// Memory per stream is one data message, whatever the object's size.
//
// [Downloader] is the Go client. A DownloadService client made with
// [WithDataBuffers] decodes data messages into buffers the Downloader
// recycles, instead of allocating 1 MiB per message.
//
// [ObjectService] implements StatObject, ListObjects and DeleteObject.
// Errors become Connect codes through [wire.ConnectError], the one mapping
// both services share.
package download
