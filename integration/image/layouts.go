package image

import (
	"debug/elf"
	"fmt"
	"io/fs"
)

// Names of the test images of the real-cluster test. Pause replaces the
// kubelet's default sandbox image, so nodes need no registry.
const (
	PauseName  = "registry.k8s.io/pause:3.10"
	VrtestName = "vrouter.test/vrtest:1"
)

// DefaultPath is the PATH of every image here, Docker's default.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// rootfs is the file system every image here starts from: no shell, no
// /etc/passwd (containers run as uid 0), a world-writable /tmp, and an
// nsswitch.conf so Go's resolver consults /etc/hosts before DNS as glibc
// would.
func rootfs() []File {
	return []File{
		{Path: "/etc/nsswitch.conf", Mode: 0o644, Data: []byte("hosts: files dns\n")},
		{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
	}
}

// Vrouter returns vrouter's image, named name, with the static binary
// at /usr/local/bin/vrouter as its entrypoint and /run/vrouter for the
// admin socket. The Dockerfile at the repository root builds the same
// layout.
func Vrouter(name, binary string) Image {
	return Image{
		Name: name,
		Files: append(rootfs(),
			File{Path: "/usr/local/bin/vrouter", Mode: 0o755, Source: binary},
			File{Path: "/run/vrouter", Mode: fs.ModeDir | 0o755},
		),
		Config: Config{
			Entrypoint: []string{"/usr/local/bin/vrouter"},
			Env:        []string{DefaultPath},
			WorkingDir: "/",
			Labels: map[string]string{
				"org.opencontainers.image.title":  "vrouter",
				"org.opencontainers.image.source": "https://github.com/vrouter/vrouter",
			},
		},
	}
}

// Pause returns the pause image (PauseName) with the static binary of
// testimages/pause at /pause.
func Pause(binary string) Image {
	return Image{
		Name:  PauseName,
		Files: append(rootfs(), File{Path: "/pause", Mode: 0o755, Source: binary}),
		Config: Config{
			Entrypoint: []string{"/pause"},
			Env:        []string{DefaultPath},
			WorkingDir: "/",
		},
	}
}

// Vrtest returns the vrtest image (VrtestName) with the static binary of
// testimages/vrtest at /vrtest, running `vrtest serve` by default.
func Vrtest(binary string) Image {
	return Image{
		Name:  VrtestName,
		Files: append(rootfs(), File{Path: "/vrtest", Mode: 0o755, Source: binary}),
		Config: Config{
			Entrypoint: []string{"/vrtest"},
			Cmd:        []string{"serve"},
			Env:        []string{DefaultPath},
			WorkingDir: "/",
		},
	}
}

// elfArch maps ELF machines to GOARCH.
var elfArch = map[elf.Machine]string{
	elf.EM_X86_64:  "amd64",
	elf.EM_AARCH64: "arm64",
	elf.EM_386:     "386",
	elf.EM_ARM:     "arm",
	elf.EM_RISCV:   "riscv64",
	elf.EM_PPC64:   "ppc64le",
	elf.EM_S390:    "s390x",
}

// StaticBinary checks that path is a statically linked Linux executable,
// the only kind an image without a C library can run, and returns its
// architecture as a GOARCH.
func StaticBinary(path string) (arch string, err error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", fmt.Errorf("binary %s: %w (want a Linux executable)", path, err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return "", fmt.Errorf("binary %s: ELF type %v, want an executable", path, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", fmt.Errorf("binary %s is dynamically linked, but the image has no C library: build it with CGO_ENABLED=0", path)
		}
	}
	arch, ok := elfArch[f.Machine]
	if !ok {
		return "", fmt.Errorf("binary %s: machine %v is not one of the architectures this package knows", path, f.Machine)
	}
	if arch == "ppc64le" && f.ByteOrder.String() != "LittleEndian" {
		arch = "ppc64"
	}
	return arch, nil
}
