using System.Net;
using System.Net.Sockets;
using Colo.Link.Internal;
using Microsoft.Extensions.Logging;

namespace Colo.Link;

/// <summary>The secondary's side of link set-up: listens on an address and accepts the primary's connection.</summary>
public sealed class LinkListener : IAsyncDisposable, IDisposable
{
    private readonly Socket _socket;
    private readonly ILogger _logger;

    /// <summary>The bound address (with the actual port when port 0 was requested).</summary>
    public IPEndPoint LocalEndPoint { get; }

    /// <summary>Binds <paramref name="localEndPoint"/> and starts listening (backlog 4).</summary>
    /// <param name="localEndPoint">Address to listen on; port 0 picks a free port (see <see cref="LocalEndPoint"/>).</param>
    /// <param name="logger">Receives listener and connection events.</param>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="SocketException">The address cannot be bound (e.g. in use).</exception>
    public LinkListener(IPEndPoint localEndPoint, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(localEndPoint);
        ArgumentNullException.ThrowIfNull(logger);
        var socket = new Socket(localEndPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            socket.Bind(localEndPoint);
            socket.Listen(4);
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        _socket = socket;
        _logger = logger;
        LocalEndPoint = (IPEndPoint)socket.LocalEndPoint!;
        Log.Listening(logger, LocalEndPoint);
    }

    /// <summary>Waits for one incoming connection. May be called again for a later connection (re-protection).</summary>
    /// <param name="timeout">How long to wait; <see cref="Timeout.InfiniteTimeSpan"/> waits until cancelled.</param>
    /// <param name="ct">Cancels the wait.</param>
    /// <returns>The accepted connection, configured like <see cref="LinkConnection.ConnectAsync"/>'s.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is zero or negative (and not infinite).</exception>
    /// <exception cref="TimeoutException">No connection arrived within <paramref name="timeout"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="ct"/> was cancelled.</exception>
    /// <exception cref="ObjectDisposedException">The listener is disposed.</exception>
    /// <exception cref="SocketException">Accepting failed.</exception>
    public async Task<LinkConnection> AcceptAsync(TimeSpan timeout, CancellationToken ct = default)
    {
        if (timeout <= TimeSpan.Zero && timeout != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "The accept timeout must be positive or infinite.");
        }

        using var wait = CancellationTokenSource.CreateLinkedTokenSource(ct);
        wait.CancelAfter(timeout);
        Socket accepted;
        try
        {
            accepted = await _socket.AcceptAsync(wait.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new TimeoutException($"No replication link connection on {LocalEndPoint} within {timeout.TotalMilliseconds:F0} ms.");
        }

        return LinkConnection.FromAccepted(accepted, _logger);
    }

    /// <summary>Stops listening; connections already accepted are not affected.</summary>
    public void Dispose() => _socket.Dispose();

    /// <summary>Stops listening; connections already accepted are not affected.</summary>
    /// <returns>A completed task.</returns>
    public ValueTask DisposeAsync()
    {
        Dispose();
        return default;
    }
}
