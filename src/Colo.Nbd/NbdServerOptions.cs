namespace Colo.Nbd;

/// <summary>Limits of an <see cref="NbdServer"/>. The defaults suit QEMU's NBD client (queue depth 16, 32 MiB requests).</summary>
public sealed class NbdServerOptions
{
    /// <summary>Requests handled concurrently per connection (read, being processed, or reply not yet sent). Default 16;
    /// the connection stops reading requests while the limit is reached. Must be at least 1.</summary>
    public int MaxInFlightRequests { get; init; } = 16;

    /// <summary>Bytes of request and reply payload held per connection at once. Default 64 MiB. A single request
    /// larger than this is still admitted when nothing else is in flight.</summary>
    public long MaxInFlightBytes { get; init; } = 64L * 1024 * 1024;

    /// <summary>Largest READ or WRITE payload accepted; advertised as the maximum block size. Default 32 MiB (the
    /// protocol's default). Larger reads are answered with EINVAL; larger writes have their payload read and
    /// discarded, then EINVAL (see <see cref="MaxDiscardedPayload"/>).</summary>
    public int MaxPayload { get; init; } = 32 * 1024 * 1024;

    /// <summary>Largest oversized WRITE payload the server reads and discards to keep the connection in step; a
    /// longer one closes the connection (the protocol allows a hard disconnect for it). Default 256 MiB.</summary>
    public long MaxDiscardedPayload { get; init; } = 256L * 1024 * 1024;

    /// <summary>Longest option data accepted during the handshake; a longer option closes the connection. Default
    /// 16 KiB (option data is at most a 4096-byte name and a few fields).</summary>
    public int MaxOptionLength { get; init; } = 16 * 1024;

    /// <summary>Time allowed from accepting a connection to entering transmission; the connection is closed when it
    /// runs out (a client that connects and says nothing). Default 10 s; <see cref="Timeout.InfiniteTimeSpan"/>
    /// disables it.</summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Longest time one reply may take to be handed to the kernel; when a client stops reading replies for
    /// this long its connection is closed (otherwise a stuck peer would hold its requests forever). Default 30 s;
    /// <see cref="Timeout.InfiniteTimeSpan"/> disables it.</summary>
    public TimeSpan SendTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>On server shutdown, how long each connection may take to finish its in-flight requests and send their
    /// replies before the socket is closed anyway. Default 5 s.</summary>
    public TimeSpan ShutdownGrace { get; init; } = TimeSpan.FromSeconds(5);

    internal void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxInFlightRequests, 1, nameof(MaxInFlightRequests));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxInFlightBytes, 1, nameof(MaxInFlightBytes));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxPayload, 512, nameof(MaxPayload));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(MaxPayload, Array.MaxLength - 64, nameof(MaxPayload));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxDiscardedPayload, 0, nameof(MaxDiscardedPayload));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxOptionLength, 4 + NbdProtocolLimits.MaxNameLength + 2, nameof(MaxOptionLength));
        if (HandshakeTimeout <= TimeSpan.Zero && HandshakeTimeout != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentOutOfRangeException(nameof(HandshakeTimeout), HandshakeTimeout, "Must be positive or infinite.");
        }

        if (SendTimeout <= TimeSpan.Zero && SendTimeout != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentOutOfRangeException(nameof(SendTimeout), SendTimeout, "Must be positive or infinite.");
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(ShutdownGrace, TimeSpan.Zero, nameof(ShutdownGrace));
    }
}

/// <summary>Limits fixed by the NBD protocol.</summary>
public static class NbdProtocolLimits
{
    /// <summary>Longest export name: 4096 bytes of UTF-8.</summary>
    public const int MaxNameLength = 4096;
}
