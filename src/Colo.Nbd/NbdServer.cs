using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Colo.Nbd.Internal;
using Microsoft.Extensions.Logging;

namespace Colo.Nbd;

/// <summary>
/// An NBD server (fixed newstyle handshake, simple replies) exporting one <see cref="IBlockDevice"/> under one name,
/// to any number of concurrent clients. QEMU connects with
/// <c>-blockdev driver=nbd,server.type=unix,server.path=SOCKET,export=NAME</c> or the URI
/// <c>nbd+unix:///NAME?socket=SOCKET</c>.
/// </summary>
/// <remarks>
/// <para>Handshake: NBD_OPT_GO, NBD_OPT_INFO (NBD_INFO_EXPORT, NBD_INFO_NAME on request, NBD_INFO_BLOCK_SIZE always:
/// minimum 1, preferred 4096, maximum <see cref="NbdServerOptions.MaxPayload"/>), NBD_OPT_LIST, NBD_OPT_ABORT and
/// NBD_OPT_EXPORT_NAME; every other option (structured replies, TLS, meta contexts) gets NBD_REP_ERR_UNSUP. The
/// empty name selects the export too (the protocol's "default export").</para>
/// <para>Transmission: READ, WRITE, FLUSH, TRIM, WRITE_ZEROES (NO_HOLE honoured), DISC; FUA honoured on every
/// command (a FUA trim or write-zeroes is followed by a flush). Advertised flags: HAS_FLAGS, SEND_FLUSH, SEND_FUA,
/// SEND_TRIM, SEND_WRITE_ZEROES, CAN_MULTI_CONN (the device contract makes a flush cover all connections), or
/// READ_ONLY instead of the write-side flags for a read-only device.</para>
/// <para>Errors leave the connection open: a read or trim past the end, an oversized read or write (its payload is
/// read and discarded), an unknown command or flag get EINVAL; a write or write-zeroes past the end gets ENOSPC (as
/// the protocol asks); writes to a read-only device get EPERM; device failures get EIO (or the device's
/// <see cref="BlockDeviceException.Error"/>). A malformed handshake or request magic closes that connection only.</para>
/// </remarks>
public sealed class NbdServer
{
    private readonly ConcurrentDictionary<long, Task> _connections = new();
    private long _nextConnectionId;

    /// <summary>Creates a server; nothing listens until a Serve method is called.</summary>
    /// <param name="device">The device exported.</param>
    /// <param name="exportName">The export's name (at most 4096 bytes of UTF-8).</param>
    /// <param name="logger">Receives connection events.</param>
    /// <param name="options">Limits; null for the defaults.</param>
    public NbdServer(IBlockDevice device, string exportName, ILogger logger, NbdServerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(exportName);
        ArgumentNullException.ThrowIfNull(logger);
        byte[] name = Encoding.UTF8.GetBytes(exportName);
        if (name.Length > NbdProtocolLimits.MaxNameLength)
        {
            throw new ArgumentException("The export name is longer than 4096 bytes.", nameof(exportName));
        }

        options ??= new NbdServerOptions();
        options.Validate();
        Device = device;
        ExportName = exportName;
        ExportNameUtf8 = name;
        Logger = logger;
        Options = options;
    }

    /// <summary>The exported device.</summary>
    public IBlockDevice Device { get; }

    /// <summary>The export's name.</summary>
    public string ExportName { get; }

    /// <summary>The limits in force.</summary>
    public NbdServerOptions Options { get; }

    /// <summary>Connections currently open (handshake or transmission).</summary>
    public int ActiveConnections => _connections.Count;

    internal ILogger Logger { get; }

    internal byte[] ExportNameUtf8 { get; }

    /// <summary>
    /// Listens on a unix socket and serves clients until <paramref name="ct"/> is cancelled. The socket file exists
    /// when this method returns (bind errors are thrown here, not through the task); a stale file at the path is
    /// replaced, and the file is removed when serving ends.
    /// </summary>
    /// <param name="socketPath">Path of the unix socket.</param>
    /// <param name="ct">Stops the server: no new connections, each open one finishes its in-flight requests (for at
    /// most <see cref="NbdServerOptions.ShutdownGrace"/>) and is closed.</param>
    /// <returns>Completes when the listener and every connection are closed; never faults on cancellation.</returns>
    /// <exception cref="SocketException">The path cannot be bound.</exception>
    public Task ServeUnixAsync(string socketPath, CancellationToken ct)
    {
        ArgumentException.ThrowIfNullOrEmpty(socketPath);
        if (File.Exists(socketPath) && (File.GetAttributes(socketPath) & FileAttributes.Directory) == 0)
        {
            File.Delete(socketPath);
        }

        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(socketPath));
            listener.Listen(16);
        }
        catch
        {
            listener.Dispose();
            throw;
        }

        return ServeListenerAsync(listener, socketPath, socketPath, ct);
    }

    /// <summary>
    /// Listens on a TCP address (meant for loopback) and serves clients until <paramref name="ct"/> is cancelled.
    /// </summary>
    /// <param name="endpoint">Address to bind; port 0 picks a free port, reported through <paramref name="bound"/>.</param>
    /// <param name="bound">The actual bound address, known when this method returns.</param>
    /// <param name="ct">Stops the server as for <see cref="ServeUnixAsync"/>.</param>
    /// <exception cref="SocketException">The address cannot be bound.</exception>
    public Task ServeTcpAsync(IPEndPoint endpoint, out IPEndPoint bound, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        var listener = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            listener.Bind(endpoint);
            listener.Listen(16);
            bound = (IPEndPoint)listener.LocalEndPoint!;
        }
        catch
        {
            listener.Dispose();
            throw;
        }

        return ServeListenerAsync(listener, null, bound.ToString(), ct);
    }

    /// <summary>Serves one already connected socket (for example one end of a socket pair); takes ownership of it.</summary>
    /// <param name="socket">The connected socket.</param>
    /// <param name="ct">Ends the connection as a server shutdown would.</param>
    /// <returns>Completes when the connection is closed; never faults.</returns>
    public Task ServeConnectionAsync(Socket socket, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(socket);
        return RunConnectionAsync(socket, ct);
    }

    internal bool IsExportName(ReadOnlySpan<byte> name) => name.IsEmpty || name.SequenceEqual(ExportNameUtf8);

    private async Task ServeListenerAsync(Socket listener, string? unixPath, string endpointText, CancellationToken ct)
    {
        await Task.Yield();
        Log.Listening(Logger, ExportName, Device.Size, endpointText);
        using (ct.UnsafeRegister(static s => ((Socket)s!).Dispose(), listener))
        {
            try
            {
                while (!ct.IsCancellationRequested)
                {
                    Socket socket;
                    try
                    {
                        socket = await listener.AcceptAsync(ct).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException)
                    {
                        break;
                    }
                    catch (ObjectDisposedException)
                    {
                        break;
                    }
                    catch (SocketException ex) when (ex.SocketErrorCode is SocketError.OperationAborted or SocketError.Interrupted)
                    {
                        break;
                    }
                    catch (SocketException ex)
                    {
                        // Transient (out of descriptors, connection reset before accept): back off and go on.
                        Log.AcceptFailed(Logger, ex);
                        await Task.Delay(100, CancellationToken.None).ConfigureAwait(false);
                        continue;
                    }

                    if (socket.ProtocolType == ProtocolType.Tcp)
                    {
                        socket.NoDelay = true;
                        socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.KeepAlive, true);
                        socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveTime, 5);
                        socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveInterval, 1);
                        socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveRetryCount, 5);
                    }

                    _ = RunConnectionAsync(socket, ct);
                }
            }
            finally
            {
                listener.Dispose();
                await Task.WhenAll(_connections.Values).ConfigureAwait(false);
                if (unixPath is not null)
                {
                    try
                    {
                        File.Delete(unixPath);
                    }
                    catch (IOException)
                    {
                        // Best effort.
                    }
                }

                Log.Stopped(Logger, endpointText);
            }
        }
    }

    private async Task RunConnectionAsync(Socket socket, CancellationToken shutdown)
    {
        long id = Interlocked.Increment(ref _nextConnectionId);
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _connections[id] = done.Task;
        try
        {
            await Task.Yield();
            Log.Accepted(Logger, id);
            using var hardStop = new CancellationTokenSource();
            using CancellationTokenRegistration reg = shutdown.UnsafeRegister(
                static s =>
                {
                    var (cts, grace) = ((CancellationTokenSource, TimeSpan))s!;
                    try
                    {
                        cts.CancelAfter(grace);
                    }
                    catch (ObjectDisposedException)
                    {
                        // The connection already ended.
                    }
                },
                (hardStop, Options.ShutdownGrace));
            var connection = new NbdConnection(socket, this, id);
            await connection.RunAsync(shutdown, hardStop.Token).ConfigureAwait(false);
        }
        finally
        {
            _connections.TryRemove(id, out _);
            done.SetResult();
        }
    }
}
