using System.Runtime.InteropServices;

namespace Colo.Proxy;

/// <summary>
/// An existing Linux TAP interface opened through /dev/net/tun (IFF_TAP | IFF_NO_PI): each read returns one
/// Ethernet frame the kernel sent out of the interface; each write injects one frame as received by it.
/// </summary>
/// <remarks>
/// <see cref="Read"/> and <see cref="Write"/> may run concurrently on different threads. <see cref="Dispose"/> wakes a
/// blocked <see cref="Read"/> (which then returns 0) through an eventfd; the descriptor is closed once no call uses it.
/// </remarks>
public sealed unsafe class TapDevice : IDisposable
{
    private readonly FdHandle _fd;
    private readonly FdHandle _wake;
    private volatile bool _disposed;

    private TapDevice(string name, FdHandle fd, FdHandle wake)
    {
        Name = name;
        _fd = fd;
        _wake = wake;
    }

    /// <summary>Interface name.</summary>
    public string Name { get; }

    /// <summary>Attaches to the existing TAP interface <paramref name="name"/>.</summary>
    /// <param name="name">Interface name (1–15 ASCII characters), e.g. created by <c>ip tuntap add dev NAME mode tap</c>.</param>
    /// <returns>The open device.</returns>
    /// <exception cref="ArgumentException">The name is empty, too long or not ASCII.</exception>
    /// <exception cref="IOException">The interface does not exist or is not a TUN/TAP device, or open/ioctl failed (message carries errno; EPERM: need CAP_NET_ADMIN or ownership; EBUSY: already attached).</exception>
    public static TapDevice Open(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (name.Length > 15 || !System.Text.Ascii.IsValid(name) || name.Contains('/'))
        {
            throw new ArgumentException("Interface name must be 1-15 ASCII characters without '/'.", nameof(name));
        }
        if (!Directory.Exists("/sys/class/net/" + name))
        {
            throw new IOException($"TAP interface '{name}' does not exist (create it with 'ip tuntap add dev {name} mode tap').");
        }
        if (!File.Exists("/sys/class/net/" + name + "/tun_flags"))
        {
            throw new IOException($"Interface '{name}' is not a TUN/TAP device.");
        }
        int fd = Native.Open("/dev/net/tun", Native.O_RDWR | Native.O_NONBLOCK | Native.O_CLOEXEC);
        if (fd < 0)
        {
            int err = Marshal.GetLastPInvokeError();
            throw new IOException($"open(/dev/net/tun) failed: {Native.Describe(err)}");
        }
        var handle = new FdHandle(fd);
        byte* ifr = stackalloc byte[40];
        new Span<byte>(ifr, 40).Clear();
        for (int i = 0; i < name.Length; i++)
        {
            ifr[i] = (byte)name[i];
        }
        *(short*)(ifr + 16) = Native.IFF_TAP | Native.IFF_NO_PI;
        if (Native.Ioctl(fd, Native.TUNSETIFF, ifr) < 0)
        {
            int err = Marshal.GetLastPInvokeError();
            handle.Dispose();
            throw new IOException($"ioctl(TUNSETIFF, '{name}', IFF_TAP|IFF_NO_PI) failed: {Native.Describe(err)}");
        }
        int efd = Native.EventFd(0, Native.EFD_CLOEXEC | Native.EFD_NONBLOCK);
        if (efd < 0)
        {
            int err = Marshal.GetLastPInvokeError();
            handle.Dispose();
            throw new IOException($"eventfd failed: {Native.Describe(err)}");
        }
        return new TapDevice(name, handle, new FdHandle(efd));
    }

    /// <summary>Blocks until one frame arrives and copies it into <paramref name="buffer"/>.</summary>
    /// <param name="buffer">Destination; should hold MTU + 18 bytes (a larger frame is truncated by the kernel).</param>
    /// <returns>Frame length in bytes; 0 when the device was disposed (also while blocked).</returns>
    /// <exception cref="IOException">poll/read failed (message carries errno).</exception>
    public int Read(Span<byte> buffer)
    {
        if (_disposed)
        {
            return 0;
        }
        bool fdRef = false, wakeRef = false;
        try
        {
            _fd.DangerousAddRef(ref fdRef);
            _wake.DangerousAddRef(ref wakeRef);
            int fd = _fd.Fd;
            Native.PollFd* fds = stackalloc Native.PollFd[2];
            fixed (byte* p = buffer)
            {
                while (true)
                {
                    if (_disposed)
                    {
                        return 0;
                    }
                    nint n = Native.Read(fd, p, buffer.Length);
                    if (n >= 0)
                    {
                        return (int)n;
                    }
                    int err = Marshal.GetLastPInvokeError();
                    if (err == Native.EINTR)
                    {
                        continue;
                    }
                    if (err != Native.EAGAIN)
                    {
                        throw new IOException($"read({Name}) failed: {Native.Describe(err)}");
                    }
                    fds[0] = new Native.PollFd { Fd = fd, Events = Native.POLLIN };
                    fds[1] = new Native.PollFd { Fd = _wake.Fd, Events = Native.POLLIN };
                    int r = Native.Poll(fds, 2, -1);
                    if (r < 0)
                    {
                        err = Marshal.GetLastPInvokeError();
                        if (err == Native.EINTR)
                        {
                            continue;
                        }
                        throw new IOException($"poll({Name}) failed: {Native.Describe(err)}");
                    }
                    if (fds[1].Revents != 0 || _disposed)
                    {
                        return 0;
                    }
                    if ((fds[0].Revents & (Native.POLLERR | Native.POLLNVAL)) != 0)
                    {
                        throw new IOException($"poll({Name}) reported an error condition (revents 0x{fds[0].Revents:x}).");
                    }
                }
            }
        }
        catch (ObjectDisposedException)
        {
            return 0;
        }
        finally
        {
            if (fdRef)
            {
                _fd.DangerousRelease();
            }
            if (wakeRef)
            {
                _wake.DangerousRelease();
            }
        }
    }

    /// <summary>Injects one frame into the interface (as if received by it).</summary>
    /// <param name="frame">A complete Ethernet frame (14..MTU+18 bytes).</param>
    /// <exception cref="ObjectDisposedException">The device was disposed.</exception>
    /// <exception cref="IOException">write failed, was short, or could not proceed within 1 s (message carries errno).</exception>
    public void Write(ReadOnlySpan<byte> frame)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        bool fdRef = false;
        try
        {
            _fd.DangerousAddRef(ref fdRef);
            int fd = _fd.Fd;
            fixed (byte* p = frame)
            {
                while (true)
                {
                    nint n = Native.Write(fd, p, frame.Length);
                    if (n == frame.Length)
                    {
                        return;
                    }
                    if (n >= 0)
                    {
                        throw new IOException($"write({Name}) was short: {n} of {frame.Length} bytes.");
                    }
                    int err = Marshal.GetLastPInvokeError();
                    if (err == Native.EINTR)
                    {
                        continue;
                    }
                    if (err != Native.EAGAIN)
                    {
                        throw new IOException($"write({Name}, {frame.Length} bytes) failed: {Native.Describe(err)}");
                    }
                    Native.PollFd pfd = new() { Fd = fd, Events = Native.POLLOUT };
                    if (Native.Poll(&pfd, 1, 1000) == 0)
                    {
                        throw new IOException($"write({Name}) not possible within 1 s (EAGAIN).");
                    }
                }
            }
        }
        finally
        {
            if (fdRef)
            {
                _fd.DangerousRelease();
            }
        }
    }

    /// <summary>Wakes any blocked reader (it returns 0) and closes the descriptor once no call uses it. Idempotent.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        bool wakeRef = false;
        try
        {
            _wake.DangerousAddRef(ref wakeRef);
            ulong one = 1;
            _ = Native.Write(_wake.Fd, (byte*)&one, 8);
        }
        catch (ObjectDisposedException)
        {
        }
        finally
        {
            if (wakeRef)
            {
                _wake.DangerousRelease();
            }
        }
        _fd.Dispose();
        _wake.Dispose();
    }
}
