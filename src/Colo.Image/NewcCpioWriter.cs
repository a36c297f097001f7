using System.Text;

namespace Colo.Image;

/// <summary>
/// Writes a cpio archive in the "newc" (SVR4, no CRC, magic <c>070701</c>) format that the Linux
/// kernel unpacks as an initramfs. Every header is 110 ASCII bytes (magic + 13 eight-digit hex
/// fields), followed by the NUL-terminated name padded to a multiple of 4 bytes, followed by the
/// data padded to a multiple of 4 bytes. The archive ends with the entry <c>TRAILER!!!</c>.
/// Output is deterministic: owner is root, mtime is a fixed value, inodes are numbered in order.
/// Not thread-safe.
/// </summary>
internal sealed class NewcCpioWriter
{
    internal const uint S_IFDIR = 0x4000, S_IFREG = 0x8000, S_IFLNK = 0xA000, S_IFCHR = 0x2000;
    internal const string Trailer = "TRAILER!!!";

    private readonly Stream _out;
    private readonly uint _mtime;
    private uint _nextIno = 1;
    private long _written;
    private bool _finished;

    /// <param name="output">Destination stream (not closed by the writer).</param>
    /// <param name="mtime">Modification time for every entry, seconds since the epoch.</param>
    public NewcCpioWriter(Stream output, uint mtime = 0)
    {
        _out = output;
        _mtime = mtime;
    }

    /// <summary>Bytes written so far (uncompressed archive size).</summary>
    public long BytesWritten => _written;

    public void AddDirectory(string path, uint perm = 0x1ED /*0755*/) =>
        WriteEntry(path, S_IFDIR | (perm & 0xFFF), 2, 0, 0, ReadOnlySpan<byte>.Empty);

    public void AddFile(string path, ReadOnlySpan<byte> data, uint perm = 0x1A4 /*0644*/) =>
        WriteEntry(path, S_IFREG | (perm & 0xFFF), 1, 0, 0, data);

    public void AddSymlink(string path, string target) =>
        WriteEntry(path, S_IFLNK | 0x1FF, 1, 0, 0, Encoding.UTF8.GetBytes(target));

    public void AddCharDevice(string path, uint major, uint minor, uint perm = 0x180 /*0600*/) =>
        WriteEntry(path, S_IFCHR | (perm & 0xFFF), 1, major, minor, ReadOnlySpan<byte>.Empty);

    /// <summary>Writes the trailer entry. Further Add calls throw <see cref="InvalidOperationException"/>.</summary>
    public void Finish()
    {
        if (_finished) return;
        WriteRaw(Trailer, 0, 0, 0, 0, 0, ReadOnlySpan<byte>.Empty);
        _finished = true;
        _out.Flush();
    }

    private void WriteEntry(string path, uint mode, uint nlink, uint rmaj, uint rmin, ReadOnlySpan<byte> data)
    {
        if (_finished) throw new InvalidOperationException("archive already finished");
        var name = NormalizePath(path);
        WriteRaw(name, _nextIno++, mode, nlink, rmaj, rmin, data);
    }

    /// <summary>Strips leading "/" and "./"; rejects empty names, "..", and the trailer name.</summary>
    internal static string NormalizePath(string path)
    {
        var p = path.Replace('\\', '/');
        while (p.StartsWith("./", StringComparison.Ordinal)) p = p[2..];
        p = p.TrimStart('/').TrimEnd('/');
        if (p.Length == 0 || p == Trailer || p.Split('/').Any(s => s is ".." or "." or ""))
            throw new ArgumentException($"invalid archive path '{path}'", nameof(path));
        return p;
    }

    private void WriteRaw(string name, uint ino, uint mode, uint nlink, uint rmaj, uint rmin, ReadOnlySpan<byte> data)
    {
        var nameBytes = Encoding.UTF8.GetBytes(name);
        var sb = new StringBuilder(110);
        sb.Append("070701");
        foreach (var v in new uint[] {
                     ino, mode, 0 /*uid*/, 0 /*gid*/, nlink, _mtime, checked((uint)data.Length),
                     0 /*devmajor*/, 0 /*devminor*/, rmaj, rmin, (uint)nameBytes.Length + 1, 0 /*check*/ })
            sb.Append(v.ToString("X8", System.Globalization.CultureInfo.InvariantCulture));
        var header = Encoding.ASCII.GetBytes(sb.ToString());
        Write(header);
        Write(nameBytes);
        Write([0]);
        Pad();
        Write(data);
        Pad();
    }

    private void Write(ReadOnlySpan<byte> b)
    {
        _out.Write(b);
        _written += b.Length;
    }

    private void Pad()
    {
        var pad = (int)((4 - (_written & 3)) & 3);
        if (pad > 0) Write(stackalloc byte[pad]);
    }
}
