using System.Buffers.Binary;
using System.Net.Sockets;

namespace Colo.Proxy;

/// <summary>
/// Listens on a unix stream socket for QEMU's <c>-netdev stream,server=off,addr.type=unix,addr.path=PATH</c>, which
/// connects as a client and exchanges Ethernet frames as a 4-byte big-endian length followed by the frame.
/// </summary>
public sealed class NetdevStreamListener : IDisposable
{
    private readonly Socket _socket;
    private int _disposed;

    /// <summary>Binds and listens at <paramref name="path"/>, deleting a stale socket file left there.</summary>
    /// <param name="path">Socket path (at most ~107 bytes).</param>
    /// <exception cref="ArgumentException">The path is empty.</exception>
    /// <exception cref="IOException">Another process is listening at the path.</exception>
    /// <exception cref="SocketException">bind/listen failed.</exception>
    public NetdevStreamListener(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        Path = path;
        if (File.Exists(path))
        {
            using (var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
            {
                bool live;
                try
                {
                    probe.Connect(new UnixDomainSocketEndPoint(path));
                    live = true;
                }
                catch (SocketException)
                {
                    live = false;
                }
                if (live)
                {
                    throw new IOException($"Another process is listening on '{path}'.");
                }
            }
            File.Delete(path);
        }
        _socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            _socket.Bind(new UnixDomainSocketEndPoint(path));
            _socket.Listen(4);
        }
        catch
        {
            _socket.Dispose();
            throw;
        }
    }

    /// <summary>The socket path.</summary>
    public string Path { get; }

    /// <summary>Waits for QEMU to connect.</summary>
    /// <param name="timeout">How long to wait; <see cref="Timeout.InfiniteTimeSpan"/> for no limit.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>The connection.</returns>
    /// <exception cref="TimeoutException">Nobody connected within <paramref name="timeout"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    /// <exception cref="ObjectDisposedException">The listener was disposed.</exception>
    public async Task<NetdevStreamConnection> AcceptAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        if (timeout != Timeout.InfiniteTimeSpan)
        {
            cts.CancelAfter(timeout);
        }
        try
        {
            Socket s = await _socket.AcceptAsync(cts.Token).ConfigureAwait(false);
            return new NetdevStreamConnection(s);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"No connection on '{Path}' within {timeout.TotalMilliseconds:F0} ms.");
        }
    }

    /// <summary>Stops listening and deletes the socket file. Idempotent.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        _socket.Dispose();
        try
        {
            File.Delete(Path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}

/// <summary>
/// One QEMU <c>-netdev stream</c> connection: frames framed as 4-byte big-endian length + Ethernet frame.
/// One reader at a time; <see cref="WriteFrame"/> is thread-safe.
/// </summary>
public sealed class NetdevStreamConnection : IDisposable
{
    /// <summary>Largest frame accepted or sent, in bytes: 65535 + 18 (Ethernet header with VLAN tag and FCS room).</summary>
    public const int MaxFrameLength = 65535 + 18;

    /// <summary>Send timeout in milliseconds after which a frame that could not start to be sent is dropped.</summary>
    public const int SendTimeoutMs = 1000;

    private readonly Socket _socket;
    private readonly byte[] _header = new byte[4];
    private readonly byte[] _sendBuffer = new byte[MaxFrameLength + 4];
    private readonly Lock _writeLock = new();
    private long _framesRead, _framesWritten, _framesDropped, _framesTooLong;
    private int _disposed;

    internal NetdevStreamConnection(Socket socket)
    {
        _socket = socket;
        _socket.SendTimeout = SendTimeoutMs;
    }

    /// <summary>Frames read.</summary>
    public long FramesRead => Interlocked.Read(ref _framesRead);
    /// <summary>Frames written completely.</summary>
    public long FramesWritten => Interlocked.Read(ref _framesWritten);
    /// <summary>Frames dropped because the peer did not accept data within <see cref="SendTimeoutMs"/>.</summary>
    public long FramesDropped => Interlocked.Read(ref _framesDropped);
    /// <summary>Frames read and discarded because they did not fit the caller's buffer.</summary>
    public long FramesTooLongForBuffer => Interlocked.Read(ref _framesTooLong);

    /// <summary>
    /// Reads the next frame. Zero-length frames are skipped; a frame longer than <paramref name="buffer"/> (but within
    /// <see cref="MaxFrameLength"/>) is read, discarded and counted in <see cref="FramesTooLongForBuffer"/>.
    /// </summary>
    /// <param name="buffer">Destination; <see cref="MaxFrameLength"/> bytes never discard a frame (MTU + 18 suffices for QEMU's NIC).</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The frame length in bytes, or 0 when the peer closed the connection between frames.</returns>
    /// <exception cref="ArgumentException"><paramref name="buffer"/> is empty.</exception>
    /// <exception cref="InvalidDataException">A frame longer than <see cref="MaxFrameLength"/> was announced (protocol violation).</exception>
    /// <exception cref="EndOfStreamException">The peer closed the connection inside a frame.</exception>
    /// <exception cref="SocketException">The socket failed.</exception>
    public async ValueTask<int> ReadFrameAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        if (buffer.IsEmpty)
        {
            throw new ArgumentException("Buffer is empty.", nameof(buffer));
        }
        while (true)
        {
            int got = await ReadExactAsync(_header, cancellationToken).ConfigureAwait(false);
            if (got == 0)
            {
                return 0;
            }
            if (got < 4)
            {
                throw new EndOfStreamException("Connection closed inside a frame header.");
            }
            uint len = BinaryPrimitives.ReadUInt32BigEndian(_header);
            if (len > MaxFrameLength)
            {
                throw new InvalidDataException($"Frame length {len} exceeds {MaxFrameLength} bytes (protocol violation).");
            }
            if (len == 0)
            {
                continue;
            }
            if (len > buffer.Length)
            {
                // Keep the framing: consume the frame in buffer-sized pieces and drop it.
                int left = (int)len;
                while (left > 0)
                {
                    int chunk = Math.Min(left, buffer.Length);
                    got = await ReadExactAsync(buffer.Slice(0, chunk), cancellationToken).ConfigureAwait(false);
                    if (got < chunk)
                    {
                        throw new EndOfStreamException($"Connection closed inside a {len}-byte frame.");
                    }
                    left -= chunk;
                }
                Interlocked.Increment(ref _framesTooLong);
                continue;
            }
            got = await ReadExactAsync(buffer.Slice(0, (int)len), cancellationToken).ConfigureAwait(false);
            if (got < len)
            {
                throw new EndOfStreamException($"Connection closed inside a {len}-byte frame after {got} bytes.");
            }
            Interlocked.Increment(ref _framesRead);
            return (int)len;
        }
    }

    private async ValueTask<int> ReadExactAsync(Memory<byte> dest, CancellationToken ct)
    {
        int total = 0;
        while (total < dest.Length)
        {
            int n = await _socket.ReceiveAsync(dest.Slice(total), SocketFlags.None, ct).ConfigureAwait(false);
            if (n == 0)
            {
                break;
            }
            total += n;
        }
        return total;
    }

    /// <summary>
    /// Sends one frame (header and frame in one send). Thread-safe. If the peer accepts no data for
    /// <see cref="SendTimeoutMs"/> the frame is dropped and counted in <see cref="FramesDropped"/>; a frame already
    /// partly sent is completed (up to 5 s more, after which the connection is closed to keep the framing intact).
    /// </summary>
    /// <param name="frame">The Ethernet frame (1..<see cref="MaxFrameLength"/> bytes).</param>
    /// <returns>True when sent, false when dropped.</returns>
    /// <exception cref="ArgumentException">The frame is empty or too long.</exception>
    /// <exception cref="ObjectDisposedException">The connection was disposed.</exception>
    /// <exception cref="IOException">The socket failed (peer gone); the inner exception is the <see cref="SocketException"/>.</exception>
    public bool WriteFrame(ReadOnlySpan<byte> frame)
    {
        if (frame.IsEmpty || frame.Length > MaxFrameLength)
        {
            throw new ArgumentException($"Frame length {frame.Length} not in 1..{MaxFrameLength}.", nameof(frame));
        }
        lock (_writeLock)
        {
            ObjectDisposedException.ThrowIf(_disposed != 0, this);
            BinaryPrimitives.WriteUInt32BigEndian(_sendBuffer, (uint)frame.Length);
            frame.CopyTo(_sendBuffer.AsSpan(4));
            int total = frame.Length + 4;
            int sent = 0;
            long deadline = Environment.TickCount64 + 5000 + SendTimeoutMs;
            while (sent < total)
            {
                int n = _socket.Send(_sendBuffer.AsSpan(sent, total - sent), SocketFlags.None, out SocketError err);
                if (n > 0)
                {
                    sent += n;
                    continue;
                }
                if (err is SocketError.WouldBlock or SocketError.TimedOut or SocketError.Success)
                {
                    if (sent == 0)
                    {
                        Interlocked.Increment(ref _framesDropped);
                        return false;
                    }
                    if (Environment.TickCount64 < deadline)
                    {
                        continue;
                    }
                    Interlocked.Increment(ref _framesDropped);
                    Dispose();
                    throw new IOException("Peer stalled inside a frame for more than 5 s; connection closed.");
                }
                throw new IOException($"Send of a {frame.Length}-byte frame failed: {err}.", new SocketException((int)err));
            }
            Interlocked.Increment(ref _framesWritten);
            return true;
        }
    }

    /// <summary>Closes the socket; a pending read completes with an exception or 0. Idempotent.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
        }
        _socket.Dispose();
    }
}
