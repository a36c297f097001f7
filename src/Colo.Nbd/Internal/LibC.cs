using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Colo.Nbd.Internal;

/// <summary>The few Linux calls .NET does not expose: fdatasync and fallocate.</summary>
internal static partial class LibC
{
    public const int FallocKeepSize = 0x01;
    public const int FallocPunchHole = 0x02;
    public const int FallocZeroRange = 0x10;

    public const int EINTR = 4;
    public const int EFBIG = 27;
    public const int ENOSPC = 28;
    public const int ENOSYS = 38;
    public const int EOPNOTSUPP = 95;
    public const int EDQUOT = 122;

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fdatasync(SafeFileHandle fd);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fallocate(SafeFileHandle fd, int mode, long offset, long len);

    /// <summary>fdatasync, retried on EINTR.</summary>
    /// <exception cref="IOException">The call failed; HResult is the errno.</exception>
    public static void FDataSync(SafeFileHandle fd)
    {
        while (fdatasync(fd) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (errno != EINTR)
            {
                throw new IOException($"fdatasync failed: {Marshal.GetPInvokeErrorMessage(errno)}", errno);
            }
        }
    }

    /// <summary>fallocate, retried on EINTR.</summary>
    /// <returns>0 on success, else the errno.</returns>
    public static int FAllocate(SafeFileHandle fd, int mode, long offset, long length)
    {
        while (fallocate(fd, mode, offset, length) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (errno != EINTR)
            {
                return errno;
            }
        }

        return 0;
    }
}
