"""The sync app's pages, one module per noun. Thin: read the input, call one domain function, render.

Lists filter through the querystring (so a filtered page can be shared), paginate and aggregate in SQL
(web.pages.list_page): the number of queries a page makes does not depend on the number of rows behind it.
"""
