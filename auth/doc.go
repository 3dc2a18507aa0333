// Package auth authenticates ferry's RPCs with bearer tokens and authorizes
// them by key prefix.
//
// # Tokens
//
// A server is given a token file ([LoadTokens]): a JSON object with one
// entry per token. Each entry names the token, gives the secret either in
// clear (token) or as the hex SHA-256 of the secret (sha256, so the file
// need not hold secrets), and lists the key prefixes it may read and write:
//
//	{
//	  "tokens": [
//	    {
//	      "name": "alice",
//	      "sha256": "9b6e…(64 hex digits)",
//	      "read": ["team-a/", "shared/"],
//	      "write": ["team-a/"],
//	      "max_uploads": 8
//	    },
//	    {"name": "backup-job", "token": "a-long-random-secret", "read": [""], "write": [""]}
//	  ]
//	}
//
// A prefix is a plain string prefix of object keys: "team-a/" covers
// "team-a/x" but "team-a" also covers "team-ab/x", so end prefixes with "/".
// The empty prefix "" covers every key. Unknown fields, duplicate names or
// secrets, secrets shorter than [MinTokenLength] bytes and entries granting
// nothing are errors, so a typo cannot silently widen or narrow access.
// max_uploads (optional) overrides the server's per-token limit of upload
// requests in flight.
//
// # Requests
//
// Clients send "authorization: Bearer SECRET" on every request, over
// Connect, gRPC and gRPC-Web alike (it is an HTTP header in all three).
// The presented secret is hashed with SHA-256 and compared with the hash of
// every configured token using crypto/subtle, without stopping at a match,
// so the time taken says nothing about which bytes were right.
//
// [New] returns an [Authenticator] with two layers. [Authenticator.Handler]
// is an HTTP middleware that answers Unauthenticated, in the request's
// protocol, for a ferry RPC with a missing or unknown token, and
// ResourceExhausted for an upload over the token's limit, from the headers
// alone: no body of such a request is read. [Authenticator.Interceptor] is
// a connect interceptor that then checks each request message against the
// token's rights before the handler sees it:
//
//	UploadService.Upload (header creating an upload)  write on the key
//	UploadService.CreateUpload                         write on the key
//	DownloadService.Download, ObjectService.StatObject read on the key
//	ObjectService.ListObjects                          read on a prefix that covers the listed prefix
//	ObjectService.DeleteObject                         write on the key
//	PutChunk, GetUpload, CompleteUpload, AbortUpload,
//	  and an Upload header naming an upload_id         checked by the upload service
//	                                                   against the key in the upload's manifest,
//	                                                   through [AuthorizeUpload]
//	any other message                                  PermissionDenied (deny by default)
//
// A refusal is PermissionDenied and names the token and the key. Requests
// that name only an upload ID are different: the upload service loads the
// manifest and calls [AuthorizeUpload] with its key, and a token without
// write rights there gets the same NotFound as for an upload ID that never
// existed, so upload IDs of other users can neither be used nor probed.
//
// Upload streams and PutChunk calls in flight are counted per token; one
// over the limit is refused with ResourceExhausted (clients retry it).
package auth
