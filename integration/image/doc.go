// Package image writes container images without Docker: one layer, packed
// as a single tar archive that `ctr images import`, `podman load` and
// `docker load` all accept, byte for byte the same from the same input.
//
//	Image{Name, Files, Config}
//	   │ Write / WriteFile
//	   ▼
//	image.tar ── oci-layout                  {"imageLayoutVersion":"1.0.0"}
//	          ├─ index.json ──────────────┐   OCI: ctr, podman (annotations name the image)
//	          ├─ manifest.json ─────────┐ │   Docker: docker load (RepoTags)
//	          └─ blobs/sha256/          │ │
//	               <manifest> ◀─────────┼─┘
//	               <config>   ◀─────────┤     env, entrypoint, cmd, labels; rootfs.diff_ids
//	               <layer>    ◀─────────┘     uncompressed tar: the image's files
//
// The archive is what `docker save` writes since Docker 25: an OCI image
// layout whose index.json carries the full reference in
// io.containerd.image.name and the tag in org.opencontainers.image.ref.name,
// plus a Docker manifest.json that points at the same blobs. The layer is
// stored uncompressed, so its digest is also its diff_id and no compressor
// version can change the bytes. Every file and directory belongs to uid and
// gid 0 and carries the image's Created time (the Unix epoch unless set);
// entries are sorted and the JSON is encoded the same way every time, so
// the same Image gives the same archive, and the same manifest digest.
//
// The package also holds the layouts of the images vrouter's tests and
// users run — vrouter's own (Vrouter), and the test images of the
// real-cluster test, a pause image (Pause) and vrtest (Vrtest), whose
// programs live in testimages/ — and builds them from this module's
// sources: BuildVrouter and BuildTestImages run `go build` for static
// binaries (CGO_ENABLED=0, -trimpath, no build ID) and pack them.
// `make image` does the same for vrouter with the command in mkimage and
// writes bin/vrouter-image.tar.
//
// Go stamps vcs.revision and vcs.modified into binaries built in a git
// checkout (unless -buildvcs=false), so the same commit gives the same
// digest, and a tree with uncommitted changes a different one.
//
// The package does not push images, pull base images, compress layers or
// write more than one layer or one platform; a registry upload is a job for
// skopeo or a container engine (see docs/image.md).
package image
