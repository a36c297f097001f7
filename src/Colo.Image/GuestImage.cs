namespace Colo.Image;

/// <summary>
/// A built guest image: a Debian cloud kernel and a gzip-compressed newc initramfs that boots to
/// redis-server (port 6379) and busybox httpd (port 80) and then prints <c>COLO-GUEST-READY</c>
/// on the console. Files are immutable once published; never modify them in place.
/// </summary>
/// <param name="KernelPath">Absolute path of the kernel (bzImage), for QEMU <c>-kernel</c>.</param>
/// <param name="InitrdPath">Absolute path of the initramfs (newc cpio, gzip), for QEMU <c>-initrd</c>.</param>
/// <param name="CacheDirectory">Absolute path of the cache directory holding both files and <c>manifest.json</c>.</param>
/// <param name="InputsHash">Lower-case hex SHA-256 of the build inputs; the cache directory's name.</param>
public sealed record GuestImage(string KernelPath, string InitrdPath, string CacheDirectory, string InputsHash);
